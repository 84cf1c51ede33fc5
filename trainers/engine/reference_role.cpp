#include "trainers/engine/reference_role.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/config/job_config.h"
#include "core/error.h"
#include "core/model/hf_checkpoint.h"
#include "core/status.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/data_share.h"
#include "trainers/engine/job_setup.h"
#include "trainers/engine/stage_setup.h"
#include "trainers/sentence_embeddings.h"
#include "trainers/sequence_logprobs.h"
#include "trainers/trainer.h"

namespace aln::engine {
namespace {

int64_t broadcast_code(const RemoteReference& remote, int64_t value) {
  at::Tensor t = at::full({1}, value, at::kLong);
  ALN_THROW_IF_ERROR(remote.world->broadcast(t, 0)->wait(remote.timeout));
  return t.item<int64_t>();
}

// Reference side: the next code from world rank 0, however long the policy trains before sending
// it (a whole stage may come first). The wait is renewed: a dead or stopped policy rank ends the
// job through mpirun, the policy's own timeouts or rank 0's heartbeat monitor.
absl::StatusOr<int64_t> await_code(const RemoteReference& remote) {
  at::Tensor t = at::full({1}, int64_t{0}, at::kLong);
  auto work = remote.world->broadcast(t, 0);
  while (true) {
    absl::Status s = work->wait(remote.timeout);
    if (s.ok()) return t.item<int64_t>();
    if (s.code() != absl::StatusCode::kDeadlineExceeded) return s;
  }
}

// World rank 0's weights on every reference rank (the engine's broadcast, over rank 0 and them).
void broadcast_weights(const RemoteReference& remote, model::DecoderModel& model) {
  if (remote.weights != nullptr) DataParallel(remote.weights, remote.timeout).broadcast(model.tensors());
}

int server_of(const RemoteReference& remote, int policy_rank) {
  return remote.first_service_rank + policy_rank % remote.reference_ranks;
}

// Token sequences of different lengths as two tensors: every id in order, and each one's length.
std::pair<at::Tensor, at::Tensor> pack_sentences(const std::vector<std::vector<int64_t>>& sentences) {
  std::vector<int64_t> ids, lengths;
  for (const auto& s : sentences) {
    ids.insert(ids.end(), s.begin(), s.end());
    lengths.push_back(static_cast<int64_t>(s.size()));
  }
  return {at::tensor(ids, at::kLong), at::tensor(lengths, at::kLong)};
}

std::vector<std::vector<int64_t>> unpack_sentences(const at::Tensor& ids, const at::Tensor& lengths) {
  ALN_CHECK(ids.scalar_type() == at::kLong && lengths.scalar_type() == at::kLong && ids.dim() == 1 &&
                lengths.dim() == 1,
            "an embedding request's ids and lengths are 1-d int64 tensors");
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const int64_t* len = lengths.const_data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> out;
  int64_t at = 0;
  for (int64_t i = 0; i < lengths.numel(); ++i) {
    ALN_CHECK(len[i] >= 0 && at + len[i] <= ids.numel(), "an embedding request's lengths exceed its ", ids.numel(),
              " ids");
    out.emplace_back(id + at, id + at + len[i]);
    at += len[i];
  }
  ALN_CHECK(at == ids.numel(), "an embedding request's lengths add up to ", at, ", not its ", ids.numel(), " ids");
  return out;
}

// Answers this reference rank's policy ranks (per-token log-probs, hidden states or sentence
// embeddings under `reference`) until each says the stage is done.
absl::Status serve_each_step(const RemoteReference& remote, int index, const model::DecoderModel& reference) {
  std::vector<int> clients;
  for (int r = 0; r < remote.policy_ranks; ++r) {
    if (server_of(remote, r) == remote.first_service_rank + index) clients.push_back(r);
  }
  // The same computations a colocated trainer's LocalReference makes, so both give the same bits.
  const trainers::LocalReference local(reference);
  auto handler = [&local](int client, const aln::v1::ServiceRequest& request) {
    at::NoGradGuard no_grad;
    aln::v1::ServiceReply reply;
    if (request.method() == "ready") return reply;
    std::vector<at::Tensor> in;
    for (const auto& t : request.tensors()) {
      auto tensor = dist::from_proto(t);
      ALN_THROW_IF_ERROR(tensor.status());
      in.push_back(std::move(*tensor));
    }
    if (request.method() == "embed") {
      ALN_CHECK(in.size() == 3, "an embedding request carries token ids, sentence lengths and the pad id");
      dist::to_proto(local.sentence_embeddings(unpack_sentences(in[0], in[1]), in[2].item<int64_t>()),
                     reply.add_tensors());
      return reply;
    }
    if (request.method() == "hidden") {
      ALN_CHECK(in.size() == 3, "a hidden-state request carries input ids, an attention mask and positions");
      dist::to_proto(local.hidden_states(in[0], in[1], in[2]), reply.add_tensors());
      return reply;
    }
    ALN_CHECK(request.method() == "logprobs", "unknown request \"", request.method(), "\" from rank ", client);
    ALN_CHECK(in.size() == 3, "a log-prob request carries input ids, attention and response masks");
    buffer::SequenceBatch batch;
    batch.input_ids = in[0];
    batch.attention_mask = in[1];
    batch.response_mask = in[2];
    dist::to_proto(local.token_logprobs(batch, request.temperature()), reply.add_tensors());
    return reply;
  };
  return dist::serve(remote.service, clients, handler, remote.request_timeout);
}

// The reference on ranks of its own, as trainers see it: every call one request to this policy
// rank's reference rank, answered as LocalReference would answer it there.
class RanksReference final : public trainers::Reference {
 public:
  using Ask = std::function<at::Tensor(const aln::v1::ServiceRequest&)>;
  RanksReference(Ask ask, at::Tensor head) : ask_(std::move(ask)), head_(std::move(head)) {}

  at::Tensor token_logprobs(const buffer::SequenceBatch& batch, double temperature) const override {
    aln::v1::ServiceRequest request;
    request.set_method("logprobs");
    request.set_temperature(temperature);
    dist::to_proto(batch.input_ids, request.add_tensors());
    dist::to_proto(batch.attention_mask, request.add_tensors());
    dist::to_proto(batch.response_mask, request.add_tensors());
    return ask_(request);
  }
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                           const at::Tensor& positions) const override {
    aln::v1::ServiceRequest request;
    request.set_method("hidden");
    dist::to_proto(input_ids, request.add_tensors());
    dist::to_proto(attention_mask, request.add_tensors());
    dist::to_proto(positions, request.add_tensors());
    return ask_(request);
  }
  at::Tensor output_weight() const override {
    ALN_CHECK(head_.defined(), "the reference's output projection is not held on the policy ranks for this method");
    return head_;
  }
  at::Tensor sentence_embeddings(const std::vector<std::vector<int64_t>>& sentences, int64_t pad_id) const override {
    aln::v1::ServiceRequest request;
    request.set_method("embed");
    const auto [ids, lengths] = pack_sentences(sentences);
    dist::to_proto(ids, request.add_tensors());
    dist::to_proto(lengths, request.add_tensors());
    dist::to_proto(at::tensor({pad_id}, at::kLong), request.add_tensors());
    return ask_(request);
  }

 private:
  Ask ask_;
  at::Tensor head_;
};

int64_t value_count(const StageData& data) { return 2 * static_cast<int64_t>(data.train.size() + data.eval.size()); }

// The world sum that hands the sums over: the reference ranks contribute what they computed, the
// policy ranks zeros, so each entry is one rank's number plus zeros (exact).
void exchange(const RemoteReference& remote, StageData& data, bool contribute) {
  std::vector<double> values;
  values.reserve(static_cast<size_t>(value_count(data)));
  for (auto* set : {&data.train, &data.eval}) {
    for (const auto& e : *set) {
      values.push_back(contribute && !std::isnan(e.reference_chosen) ? e.reference_chosen : 0.0);
      values.push_back(contribute && !std::isnan(e.reference_rejected) ? e.reference_rejected : 0.0);
    }
  }
  at::Tensor all = at::tensor(values, at::kDouble);
  ALN_THROW_IF_ERROR(remote.world->all_reduce_sum(all)->wait(remote.timeout));
  const double* v = all.data_ptr<double>();
  for (auto* set : {&data.train, &data.eval}) {
    for (auto& e : *set) {
      e.reference_chosen = *v++;
      e.reference_rejected = *v++;
    }
  }
}

}  // namespace

bool served_by_reference_ranks(const trainers::Needs& needs) {
  return !needs.reference.empty();
}

bool served_each_step(const trainers::Needs& needs) {
  return needs.reference_each_step();
}

void announce_first_stage(const RemoteReference& remote, int64_t first_stage) { broadcast_code(remote, first_stage); }

void skip_reference_stage(const RemoteReference& remote) { broadcast_code(remote, 0); }

void receive_reference_logprobs(const RemoteReference& remote, const model::DecoderModel* weights, StageData& data) {
  broadcast_code(remote, weights != nullptr ? 1 : 2);
  if (weights != nullptr && remote.weights != nullptr) {
    model::DecoderModel copy = weights->to(at::kFloat);  // broadcast needs contiguous buffers it may write
    broadcast_weights(remote, copy);
  }
  if (remote.share_data) {
    absl::StatusOr<StageData> mine = std::move(data);
    share_stage_data(*remote.world, mine, remote.timeout);
    ALN_THROW_IF_ERROR(mine.status());
    data = std::move(*mine);
  }
  exchange(remote, data, /*contribute=*/false);
}

std::shared_ptr<const trainers::Reference> open_reference_stage(const RemoteReference& remote,
                                                                const model::DecoderModel* weights, int policy_rank,
                                                                at::Tensor head) {
  broadcast_code(remote, weights != nullptr ? 3 : 4);
  if (weights != nullptr && remote.weights != nullptr) {
    model::DecoderModel copy = weights->to(at::kFloat);
    broadcast_weights(remote, copy);
  }
  auto client = std::make_shared<dist::ServiceClient>(remote.service, server_of(remote, policy_rank));
  // One request, one tensor back.
  auto ask = [client, timeout = remote.request_timeout](const aln::v1::ServiceRequest& request) {
    auto reply = client->call(request, timeout);
    if (!reply.ok()) ALN_FAIL("reference on reference rank ", client->server(), ": ", reply.status().message());
    ALN_CHECK(reply->tensors_size() == 1, "reference rank ", client->server(), " sent ", reply->tensors_size(),
              " tensors for one \"", request.method(), "\" request");
    auto tensor = dist::from_proto(reply->tensors(0));
    ALN_THROW_IF_ERROR(tensor.status());
    return *tensor;
  };
  // The reference ranks may still be loading reference.path: this first exchange waits as long as
  // the flag's did, the requests after it `request_timeout`.
  aln::v1::ServiceRequest ready;
  ready.set_method("ready");
  auto answered = client->call(ready, remote.timeout);
  if (!answered.ok()) ALN_FAIL("reference on reference rank ", client->server(), ": ", answered.status().message());
  return std::make_shared<RanksReference>(std::move(ask), std::move(head));
}

absl::Status close_reference_stage(const RemoteReference& remote, int policy_rank) {
  return dist::ServiceClient(remote.service, server_of(remote, policy_rank)).goodbye(remote.request_timeout);
}

absl::Status run_reference_role(const aln::v1::JobSpec& spec, const RemoteReference& remote, int index,
                                const Logger& log) {
  auto encoder = load_text_encoder(spec.model().tokenizer(), spec.model().chat_format());
  if (!encoder.ok()) return encoder.status();
  // The same model the policy ranks start from (shapes for the weights they send).
  auto initial = initial_policy(spec, **encoder);
  if (!initial.ok()) return initial.status();
  model::DecoderModel policy = std::move(*initial);
  if (auto extra = trainers::job_special_tokens(spec); !extra.empty()) (*encoder)->add_special_tokens(extra);
  if (policy.config().vocab_size < (*encoder)->vocab_size()) policy.resize_vocabulary((*encoder)->vocab_size());

  trainers::TrainerRegistry registry("trainer");
  trainers::register_all(registry);
  auto announced = await_code(remote);
  if (!announced.ok()) return announced.status();
  const int64_t first_stage = *announced;
  const auto stages = config::effective_stages(spec);
  for (size_t s = static_cast<size_t>(first_stage); s < stages.size(); ++s) {
    const aln::v1::StageSpec& stage = stages[s];
    auto trainer = registry.create(config::method_name(stage.trainer()), stage);
    if (!trainer.ok()) return trainer.status();
    if (!served_by_reference_ranks((*trainer)->needs())) continue;
    auto code = await_code(remote);
    if (!code.ok()) return code.status();
    const int64_t flag = *code;
    if (flag < 0) return absl::OkStatus();  // the policy ended before this stage (the end code)
    if (flag == 0) continue;
    std::optional<model::DecoderModel> loaded;
    if (flag == 1 || flag == 3) {
      broadcast_weights(remote, policy);
    } else {
      auto from_path = model::load_hf_model(stage.reference().path());
      if (!from_path.ok()) return from_path.status();
      loaded = std::move(*from_path);
    }
    // Stored as a colocated run stores its reference (bfloat16 under mixed precision), so the answers
    // are the same bits; the policy ranks send float32 weights (exact for bfloat16 values).
    const model::DecoderModel reference = stored_for_job(spec, loaded ? std::move(*loaded) : policy);
    loaded.reset();
    if (flag >= 3) {
      absl::Status served = serve_each_step(remote, index, reference);
      if (!served.ok()) return served;
      log.info("stage %d: reference rank %d served the policy's log-prob requests", s + 1, index);
      continue;
    }
    const std::string stage_name = stage.name().empty() ? absl::StrCat("stage", s + 1) : stage.name();
    StageData data;
    if (remote.share_data) {
      absl::StatusOr<StageData> received = absl::UnknownError("not received");
      share_stage_data(*remote.world, received, remote.timeout);
      if (!received.ok()) return received.status();
      data = std::move(*received);
    } else {
      auto prepared = prepare_stage_data(spec, stage, s, stage_name, **trainer, **encoder, policy, {},
                                         /*lead=*/false, /*resuming=*/false, log);
      if (!prepared.ok()) return prepared.status();
      data = std::move(prepared->data);
    }
    const int64_t micro = stage.optimizer().micro_batch_size();
    int64_t chunk_index = 0;
    for (auto* set : {&data.train, &data.eval}) {
      for (size_t i = 0; i < set->size(); i += static_cast<size_t>(micro), ++chunk_index) {
        if (chunk_index % remote.reference_ranks != index) continue;
        std::vector<buffer::Example*> chunk;
        for (size_t k = i; k < std::min(set->size(), i + static_cast<size_t>(micro)); ++k) chunk.push_back(&(*set)[k]);
        trainers::reference_pair_logprobs(reference, chunk, (*encoder)->pad_id());
      }
    }
    log.info("stage %s: reference log-probs of %d examples computed on reference rank %d", stage_name,
             data.train.size() + data.eval.size(), index);
    exchange(remote, data, /*contribute=*/true);
  }
  // Stay until the policy finishes (heartbeating meanwhile, so a stopped reference rank is noticed
  // and the job ends cleanly for everyone).
  auto end = await_code(remote);
  return end.ok() ? absl::OkStatus() : end.status();
}

void finish_reference_role(const RemoteReference& remote) { broadcast_code(remote, -1); }

}  // namespace aln::engine
