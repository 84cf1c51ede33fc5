#include "trainers/sft/sft_trainer.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "kernels/token_logprobs.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {
namespace {

class SftTrainer final : public Trainer {
 public:
  std::string name() const override { return "sft"; }
  Needs needs() const override { return {RecordKind::kSequences, ModelHead::kLanguageModel, {}}; }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    buffer::SequenceBatch b = buffer::collate_sft(batch, ctx.pad_id).to(ctx.policy->device());
    kernels::ResponseLogprobs lp = response_logprobs(*ctx.policy, b);
    at::Tensor tokens = lp.tokens.sum();
    LossOutput out;
    out.loss = -lp.sums.sum() / tokens.clamp_min(1);
    out.tokens = b.tokens;
    out.metrics["nll"] = out.loss;
    out.metrics["response_tokens"] = tokens;
    return out;
  }

  // The response tokens the loss averages over: all of them, except a first token with nothing
  // before it to predict it from (clamped to 1 like the loss's denominator).
  double normalizer(const std::vector<const buffer::Example*>& batch) const override {
    int64_t tokens = 0;
    for (const auto* e : batch) {
      tokens += static_cast<int64_t>(e->response.size()) - (e->prompt.empty() && !e->response.empty() ? 1 : 0);
    }
    return static_cast<double>(std::max<int64_t>(tokens, 1));
  }
};

}  // namespace

std::unique_ptr<Trainer> make_sft_trainer(const aln::v1::StageSpec&) { return std::make_unique<SftTrainer>(); }

}  // namespace aln::trainers
