#include "trainers/engine/reward_role.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config/job_config.h"
#include "core/error.h"
#include "core/model/hf_checkpoint.h"
#include "core/status.h"
#include "trainers/engine/job_setup.h"

namespace aln::engine {
namespace {

// Scores from the reward rank; stands in for one reward model of the current stage.
class RemoteRewardModel final : public trainers::RewardModel {
 public:
  RemoteRewardModel(dist::ServiceClient* client, std::chrono::milliseconds timeout, int64_t stage, int64_t index,
                    std::string name)
      : client_(client), timeout_(timeout), stage_(stage), index_(index), name_(std::move(name)) {}

  at::Tensor scores(const at::Tensor& input_ids, const at::Tensor& attention_mask) const override {
    aln::v1::ServiceRequest request;
    request.set_method("score");
    request.set_stage(stage_);
    request.set_model(index_);
    dist::to_proto(input_ids, request.add_tensors());
    dist::to_proto(attention_mask, request.add_tensors());
    auto reply = client_->call(request, timeout_);
    if (!reply.ok()) {
      ALN_FAIL("reward model ", name_, " on reward rank ", client_->server(), ": ", reply.status().message());
    }
    ALN_CHECK(reply->tensors_size() == 1, "reward rank ", client_->server(), " sent ", reply->tensors_size(),
              " tensors for one score request");
    auto scores = dist::from_proto(reply->tensors(0));
    ALN_THROW_IF_ERROR(scores.status());
    ALN_CHECK(scores->dim() == 2 && scores->size(0) == input_ids.size(0), "reward rank ", client_->server(),
              " sent scores of ", scores->dim(), " dimension(s) and ", scores->size(0), " rows for ", input_ids.size(0),
              " sequences");
    return *scores;
  }

 private:
  dist::ServiceClient* client_;
  std::chrono::milliseconds timeout_;
  int64_t stage_, index_;
  std::string name_;
};

std::string model_name(const aln::v1::RewardModelSpec& rm) { return rm.name().empty() ? rm.path() : rm.name(); }

}  // namespace

RemoteRewards::RemoteRewards(const RewardPlacement& placement, int policy_rank)
    : placement_(placement), client_(placement.channel, placement.server_of(policy_rank)) {}

absl::StatusOr<std::vector<std::unique_ptr<trainers::RewardModel>>> RemoteRewards::open_stage(
    int64_t stage, const aln::v1::StageSpec& spec) {
  aln::v1::ServiceRequest request;
  request.set_method("load");
  request.set_stage(stage);
  auto reply = client_.call(request, placement_.load_timeout);
  if (!reply.ok()) return reply.status();
  std::vector<std::unique_ptr<trainers::RewardModel>> out;
  for (int i = 0; i < spec.reward_models_size(); ++i) {
    out.push_back(
        std::make_unique<RemoteRewardModel>(&client_, placement_.timeout, stage, i, model_name(spec.reward_models(i))));
  }
  return out;
}

absl::Status RemoteRewards::finish() { return client_.goodbye(placement_.timeout); }

absl::Status run_reward_role(const aln::v1::JobSpec& spec, const RewardPlacement& placement, int index,
                             const Logger& log, MetricsRegistry& metrics) {
  std::vector<int> clients;
  for (int r = 0; r < placement.policy_ranks; ++r) {
    if (placement.server_of(r) == placement.first_reward_rank + index) clients.push_back(r);
  }
  const auto stages = config::effective_stages(spec);
  auto& requests = metrics.counter_family("aln_reward_requests_total", "Requests a reward rank served, by method");
  auto& sequences = metrics.counter("aln_reward_scored_sequences_total", "Sequences a reward rank scored");
  auto& seconds = metrics.counter("aln_reward_score_seconds_total", "Seconds a reward rank spent scoring");
  // Stages run in order, but the policy ranks do not leave a stage together: one may load the next
  // stage's models while another still scores with this stage's. So the previous stage's models
  // are dropped only when a later one loads.
  std::map<int64_t, std::vector<model::DecoderModel>> loaded;
  auto handler = [&](int client, const aln::v1::ServiceRequest& request) {
    aln::v1::ServiceReply reply;
    ALN_CHECK(request.stage() >= 0 && request.stage() < static_cast<int64_t>(stages.size()), "stage index ",
              request.stage(), " is not one of the job's ", stages.size(), " stages");
    const aln::v1::StageSpec& stage = stages[static_cast<size_t>(request.stage())];
    requests.Add({{"method", request.method()}}).Increment();
    if (request.method() == "load") {
      if (loaded.count(request.stage()) == 0) {
        std::vector<model::DecoderModel> models;
        for (const auto& rm : stage.reward_models()) {
          auto m = model::load_hf_model(rm.path());
          if (!m.ok()) ALN_FAIL("reward_models: ", model_name(rm), ": ", m.status().message());
          models.push_back(stored_for_job(spec, std::move(*m)));  // as a colocated run stores them
        }
        loaded.erase(loaded.begin(), loaded.lower_bound(request.stage() - 1));
        log.info("stage %s: %d reward model(s) loaded on reward rank %d (serving policy rank(s) %s)",
                 stage.name().empty() ? absl::StrCat("stage", request.stage() + 1) : stage.name(), models.size(), index,
                 absl::StrJoin(clients, ", "));
        loaded.emplace(request.stage(), std::move(models));
      }
      return reply;
    }
    ALN_CHECK(request.method() == "score", "unknown request \"", request.method(), "\" from rank ", client);
    auto found = loaded.find(request.stage());
    ALN_CHECK(found != loaded.end(), "scores asked for stage ", request.stage(), " whose models were not loaded");
    const std::vector<model::DecoderModel>& models = found->second;
    ALN_CHECK(request.model() >= 0 && request.model() < static_cast<int64_t>(models.size()), "reward model index ",
              request.model(), " out of range (the stage lists ", models.size(), ")");
    ALN_CHECK(request.tensors_size() == 2, "a score request carries input ids and attention mask");
    auto ids = dist::from_proto(request.tensors(0));
    ALN_THROW_IF_ERROR(ids.status());
    auto mask = dist::from_proto(request.tensors(1));
    ALN_THROW_IF_ERROR(mask.status());
    const auto start = std::chrono::steady_clock::now();
    at::NoGradGuard no_grad;
    at::Tensor scores = models[static_cast<size_t>(request.model())].scores(*ids, *mask);
    seconds.Increment(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    sequences.Increment(static_cast<double>(ids->size(0)));
    dist::to_proto(scores, reply.add_tensors());
    return reply;
  };
  log.info("reward rank %d serves policy rank(s) %s", index, absl::StrJoin(clients, ", "));
  return dist::serve(placement.channel, clients, handler, placement.timeout);
}

}  // namespace aln::engine
