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
  buffer::SequenceBatch b = buffer::collate_pairs(batch, ctx.pad_id).to(ctx.policy->device());
  kernels::ResponseLogprobs lp = response_logprobs(*ctx.policy, b);
  PairForward out;
  out.tokens = b.tokens;
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
    out.logprobs.reference_chosen = at::tensor(c, at::kDouble).to(lp.sums.options());
    out.logprobs.reference_rejected = at::tensor(r, at::kDouble).to(lp.sums.options());
  } else {
    ALN_CHECK(ctx.reference != nullptr, "reference log-probs are neither cached nor computable (no reference model)");
    // The per-token values summed as response_logprobs sums them (the same bits as its .sums).
    at::Tensor ref = response_sums(ctx.reference->token_logprobs(b, 1.0), b);
    out.logprobs.reference_chosen = ref.narrow(0, 0, n);
    out.logprobs.reference_rejected = ref.narrow(0, n, n);
  }
  return out;
}

LossOutput pair_loss_output(const PairForward& forward, const kernels::PairLossOutput& loss) {
  LossOutput out;
  out.loss = loss.loss;
  out.tokens = forward.tokens;
  out.metrics["rewards_chosen"] = loss.rewards_chosen.mean();
  out.metrics["rewards_rejected"] = loss.rewards_rejected.mean();
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
  out.metrics["logratio_chosen"] = lr_chosen.mean();
  out.metrics["logratio_rejected"] = lr_rejected.mean();
  at::Tensor per_token = (lr_chosen / lp.chosen_tokens.to(at::kDouble).clamp_min(1) +
                          lr_rejected / lp.rejected_tokens.to(at::kDouble).clamp_min(1)) /
                         2;
  out.metrics["kl_estimate"] = per_token.mean();
  return out;
}

}  // namespace aln::trainers
