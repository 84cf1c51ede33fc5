#include "trainers/grpo/grpo_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/io/safetensors.h"
#include "kernels/grpo_loss.h"
#include "trainers/grpo/rollout.h"
#include "trainers/policy_copy.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {
namespace {

class GrpoTrainer final : public Trainer {
 public:
  explicit GrpoTrainer(const aln::v1::GrpoOptions& o) : o_(o) {}
  std::string name() const override { return "grpo"; }
  Needs needs() const override {
    Needs n{RecordKind::kPrompts, ModelHead::kLanguageModel, {}};
    if (o_.beta() > 0) n.reference.push_back(ReferenceQuery::kTokenLogprobs);  // the KL term's, of the rollouts
    return n;
  }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    const int64_t g = o_.group_size();
    model::GenerationOptions gen;
    gen.max_new_tokens = o_.max_new_tokens();
    gen.temperature = o_.temperature();
    gen.top_k = o_.top_k();
    gen.top_p = o_.top_p();
    // Bounded staleness: training steps sample with a snapshot of the policy taken at most
    // max_staleness versions ago (refreshed when it would be older); evaluation samples on-policy.
    const bool stale = ctx.training && o_.max_staleness() > 0;
    if (stale && (!sampler_ || ctx.step - sampler_version_ > o_.max_staleness())) {
      // Whole, or sharded as a fully sharded policy is (the copier decides; the same on every rank).
      sampler_.reset();  // the old one goes first: at most one copy alive
      sampler_ = copier_->copy(*ctx.policy);
      sampler_version_ = ctx.step;
    }
    StepContext sample_ctx = ctx;
    if (stale) {
      sample_ctx.policy = &sampler_->model();
      sample_ctx.sampler_version = sampler_version_;
    }
    // A sampling version's first micro-batch asks ahead for every one it serves (rollout ranks):
    // the rest of this step's and, with a snapshot, the later steps' of its window.
    const int64_t version = stale ? sampler_version_ : ctx.step;
    if (ctx.training && version != asked_version_) {
      ask_ahead(sample_ctx, stale ? sampler_version_ + o_.max_staleness() : ctx.step, g, gen);
      asked_version_ = version;
    }
    RolloutBatch rollouts = sample_rollouts(batch, sample_ctx, g, gen);
    Metrics parts;
    RewardSources sources;
    const at::Tensor rewards =
        score_rollouts(rollouts, ctx, o_.reward_rule(), o_.max_new_tokens(), &parts, &sources);
    const at::Tensor advantages = kernels::group_advantages(rewards, g, o_.scale_rewards());
    publish_rollouts(rollouts, batch, g, rewards, sources, ctx);

    RolloutLossOptions lo;
    lo.temperature = o_.temperature();
    lo.epsilon_low = o_.epsilon();
    lo.epsilon_high = o_.epsilon_high() > 0 ? o_.epsilon_high() : o_.epsilon();
    lo.beta = o_.beta();
    lo.token_mean = o_.normalization() == aln::v1::TOKEN_MEAN;
    // Stale rollouts: the sampling policy's log-probs make the importance ratio differ from 1.
    if (stale) lo.sampler = &sampler_->model();
    kernels::GrpoLossOutput l = rollout_grpo_loss(rollouts, ctx, advantages, lo);
    LossOutput out;
    out.loss = l.loss;
    out.tokens = rollouts.tokens;
    for (const auto& [k, v] : parts) out.metrics[k] = v;
    out.metrics["reward_mean"] = rewards.mean();
    out.metrics["reward_std"] = rewards.view({-1, g}).std(1).mean();
    out.metrics["completion_length"] = rollouts.lengths.to(at::kDouble).mean();
    out.metrics["terminated_share"] = rollouts.lengths.lt(o_.max_new_tokens()).to(at::kDouble).mean();
    out.metrics["advantage_abs_mean"] = advantages.abs().mean();
    out.metrics["kl"] = l.kl;
    out.metrics["clip_ratio_low"] = l.clip_low;
    out.metrics["clip_ratio_high"] = l.clip_high;
    out.metrics["policy_version"] = static_cast<double>(rollouts.policy_version);
    out.metrics["rollout_staleness"] = static_cast<double>(ctx.step - rollouts.policy_version);
    return out;
  }

  // The sampling snapshot travels with checkpoints, so a resumed run samples what it would have. A
  // sharded one is put together on rank 0 first (every rank takes part), then saved there.
  void before_save() override {
    if (sampler_) to_save_ = sampler_->gather_on_lead();
  }
  absl::Status save_state(const std::string& dir) const override {
    if (!sampler_) return absl::OkStatus();
    std::optional<model::DecoderModel> gathered = std::exchange(to_save_, std::nullopt);
    const model::DecoderModel& m = gathered ? *gathered : sampler_->model();
    if (m.param_gather() != nullptr) {
      return absl::FailedPreconditionError("GRPO's sharded snapshot was not put together before it was saved");
    }
    // Stored as a whole snapshot is (in the dtype the policy computes in), whichever way it was kept.
    const at::ScalarType dtype = m.tensors().begin()->second.scalar_type();
    const at::ScalarType stored = compute_ == at::ScalarType::Undefined ? dtype : compute_;
    io::NamedTensors named;
    for (const auto& [name, t] : m.tensors()) named.emplace_back(name, t.to(stored));
    named.emplace_back("__sampler_version__", at::tensor({sampler_version_}, at::kLong));
    return io::save_safetensors((std::filesystem::path(dir) / "grpo_sampler.safetensors").string(), named);
  }
  absl::Status load_state(const std::string& dir) override {
    const std::string path = (std::filesystem::path(dir) / "grpo_sampler.safetensors").string();
    if (!std::filesystem::exists(path)) return absl::OkStatus();
    absl::Status found = absl::OkStatus();
    auto file = io::load_safetensors(path, [](const std::string& name) { return name == "__sampler_version__"; });
    if (!file.ok()) {
      found = file.status();
    } else if (file->tensors.count("__sampler_version__") == 0) {
      found = absl::DataLossError(absl::StrCat(path, ": no __sampler_version__; the checkpoint cannot resume GRPO"));
    } else if (!config_ || policy_ == nullptr) {
      found = absl::FailedPreconditionError("GRPO was not prepared before its state was loaded");
    }
    // A sharded read is collective: every rank goes on to it, or all stop with the error.
    found = copier_->agree(found, path);
    if (!found.ok()) return found;
    sampler_version_ = file->tensors.at("__sampler_version__").item<int64_t>();
    auto read = copier_->read(path, *config_, *policy_);
    if (!read.ok()) return read.status();
    sampler_ = std::move(*read);
    return absl::OkStatus();
  }
  absl::Status prepare(PrepareContext& ctx) override {
    if (ctx.policy != nullptr) {
      config_ = ctx.policy->config();
      policy_ = ctx.policy;
      compute_ = ctx.policy->compute_dtype();
    }
    copier_ = ctx.policy_copier ? ctx.policy_copier : whole_policy_copier();
    return absl::OkStatus();
  }

 private:
  aln::v1::GrpoOptions o_;
  std::unique_ptr<PolicyCopy> sampler_;  // the policy that samples (max_staleness > 0)
  int64_t sampler_version_ = 0;
  int64_t asked_version_ = -1;  // the sampling version whose rollouts were asked for ahead
  std::shared_ptr<const PolicyCopier> copier_ = whole_policy_copier();
  mutable std::optional<model::DecoderModel> to_save_;  // a sharded snapshot, put together for a checkpoint
  std::optional<model::ModelConfig> config_;
  const model::DecoderModel* policy_ =
      nullptr;  // the stage's policy: where a resumed snapshot goes, and how it computes
  at::ScalarType compute_ = at::ScalarType::Undefined;
};

}  // namespace

std::unique_ptr<Trainer> make_grpo_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<GrpoTrainer>(stage.trainer().grpo());
}

}  // namespace aln::trainers
