#include "trainers/dpo/pair_logprobs.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "core/error.h"
#include "kernels/token_logprobs.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {

PairForward pair_forward(const std::vector<const buffer::Example*>& batch, StepContext& ctx) {
  const int64_t n = static_cast<int64_t>(batch.size());
  buffer::SequenceBatch b = buffer::collate_pairs(batch, ctx.pad_id);
  kernels::ResponseLogprobs lp = response_logprobs(*ctx.policy, b);
  PairForward out;
  out.tokens = b.attention_mask.sum().item<int64_t>();
  out.logprobs.policy_chosen = lp.sums.narrow(0, 0, n);
  out.logprobs.policy_rejected = lp.sums.narrow(0, n, n);
  out.logprobs.chosen_tokens = lp.tokens.narrow(0, 0, n);
  out.logprobs.rejected_tokens = lp.tokens.narrow(0, n, n);
  bool cached = true;
  for (const auto* e : batch)
    cached = cached && std::isfinite(e->reference_chosen) && std::isfinite(e->reference_rejected);
  if (cached) {
    std::vector<double> c, r;
    for (const auto* e : batch) {
      c.push_back(e->reference_chosen);
      r.push_back(e->reference_rejected);
    }
    out.logprobs.reference_chosen = at::tensor(c, at::kDouble).to(lp.sums.scalar_type());
    out.logprobs.reference_rejected = at::tensor(r, at::kDouble).to(lp.sums.scalar_type());
  } else if (ctx.reference == nullptr && ctx.reference_token_logprobs) {
    // The reference on ranks of its own (trainers whose needs say reference_token_logprobs_only).
    at::Tensor ref = response_sums(ctx.reference_token_logprobs(b, 1.0), b);
    out.logprobs.reference_chosen = ref.narrow(0, 0, n);
    out.logprobs.reference_rejected = ref.narrow(0, n, n);
  } else {
    ALN_CHECK(ctx.reference != nullptr, "reference log-probs are neither cached nor computable (no reference model)");
    at::NoGradGuard no_grad;
    at::Tensor ref = response_logprobs(*ctx.reference, b).sums;
    out.logprobs.reference_chosen = ref.narrow(0, 0, n);
    out.logprobs.reference_rejected = ref.narrow(0, n, n);
  }
  return out;
}

LossOutput pair_loss_output(const PairForward& forward, const kernels::PairLossOutput& loss) {
  LossOutput out;
  out.loss = loss.loss;
  out.tokens = forward.tokens;
  out.metrics["rewards_chosen"] = loss.rewards_chosen.mean().item<double>();
  out.metrics["rewards_rejected"] = loss.rewards_rejected.mean().item<double>();
  out.metrics["rewards_accuracy"] = loss.accuracy;
  out.metrics["rewards_margin"] = loss.margin;
  out.sequence_logprobs = at::cat({forward.logprobs.policy_chosen, forward.logprobs.policy_rejected}).detach();
  out.sequence_tokens = at::cat({forward.logprobs.chosen_tokens, forward.logprobs.rejected_tokens}).detach();
  // Δlr = Σ_t log π/π_ref over response tokens (METHODS.md), and its per-token mean over both
  // responses: the KL to the reference when the responses are policy samples, and on fixed
  // preference data the usual drift indicator.
  const auto& lp = forward.logprobs;
  at::NoGradGuard no_grad;
  at::Tensor lr_chosen = (lp.policy_chosen - lp.reference_chosen).to(at::kDouble);
  at::Tensor lr_rejected = (lp.policy_rejected - lp.reference_rejected).to(at::kDouble);
  out.metrics["logratio_chosen"] = lr_chosen.mean().item<double>();
  out.metrics["logratio_rejected"] = lr_rejected.mean().item<double>();
  at::Tensor per_token = (lr_chosen / lp.chosen_tokens.to(at::kDouble).clamp_min(1) +
                          lr_rejected / lp.rejected_tokens.to(at::kDouble).clamp_min(1)) /
                         2;
  out.metrics["kl_estimate"] = per_token.mean().item<double>();
  return out;
}

void reference_pair_logprobs(const model::DecoderModel& reference, const std::vector<buffer::Example*>& batch,
                             int64_t pad_id) {
  at::NoGradGuard no_grad;
  std::vector<const buffer::Example*> view(batch.begin(), batch.end());
  buffer::SequenceBatch b = buffer::collate_pairs(view, pad_id);
  at::Tensor sums = response_logprobs(reference, b).sums.to(at::kDouble);
  const int64_t n = static_cast<int64_t>(batch.size());
  for (int64_t i = 0; i < n; ++i) {
    batch[i]->reference_chosen = sums[i].item<double>();
    batch[i]->reference_rejected = sums[n + i].item<double>();
  }
}

}  // namespace aln::trainers
