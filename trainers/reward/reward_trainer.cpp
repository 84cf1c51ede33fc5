#include "trainers/reward/reward_trainer.h"

#include <ATen/ATen.h>

namespace aln::trainers {
namespace {

class RewardTrainer final : public Trainer {
 public:
  explicit RewardTrainer(double center) : center_(center) {}
  std::string name() const override { return "reward"; }
  Needs needs() const override { return {RecordKind::kPreferencePairs, ModelHead::kScore, {}}; }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    buffer::SequenceBatch b = buffer::collate_pairs(batch, ctx.pad_id).to(ctx.policy->device());
    at::Tensor scores = ctx.policy->scores(b.input_ids, b.attention_mask).select(1, 0);
    const int64_t n = static_cast<int64_t>(batch.size());
    at::Tensor chosen = scores.narrow(0, 0, n), rejected = scores.narrow(0, n, n);
    LossOutput out;
    out.loss = -at::log_sigmoid(chosen - rejected).mean();
    if (center_ > 0) out.loss = out.loss + center_ * (chosen + rejected).pow(2).mean();
    out.tokens = b.tokens;
    out.metrics["reward_accuracy"] = (chosen > rejected).to(at::kDouble).mean();
    out.metrics["reward_margin"] = (chosen - rejected).to(at::kDouble).mean();
    return out;
  }

 private:
  double center_;
};

}  // namespace

std::unique_ptr<Trainer> make_reward_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<RewardTrainer>(stage.trainer().reward().center_rewards_coefficient());
}

}  // namespace aln::trainers
