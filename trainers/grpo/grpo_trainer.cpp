#include "trainers/grpo/grpo_trainer.h"

#include <ATen/ATen.h>

#include "kernels/grpo_loss.h"
#include "trainers/rollouts/rollout.h"

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

  // The engine's producer samples: with the snapshot (max_staleness) in training, on-policy otherwise.
  RolloutPlan rollout_plan() const override {
    return sampling_plan(o_.group_size(), o_.max_new_tokens(), o_.temperature(), o_.top_k(), o_.top_p(),
                         o_.max_staleness());
  }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    const int64_t g = o_.group_size();
    const RolloutBatch& rollouts = take_rollouts(batch, ctx, rollout_plan(), "grpo");
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
    lo.sampler = ctx.sampler;
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

 private:
  aln::v1::GrpoOptions o_;
};

}  // namespace

std::unique_ptr<Trainer> make_grpo_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<GrpoTrainer>(stage.trainer().grpo());
}

}  // namespace aln::trainers
