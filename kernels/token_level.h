#pragma once
// Token-level preference terms over the full vocabulary (METHODS.md: TDPO, §3 Ra-DPO). At each
// scored position t, with policy logits z_t and reference logits r_t over the vocabulary and
// d_v = log pi_ref(v|s_t) - log pi(v|s_t):
//   sequence KL (TDPO):   sum_v pi_ref(v) d_v                          = KL(pi_ref || pi)
//   CVaR (Ra-DPO):        sum_v pi_ref(v) d_v [d_v > VaR_t], VaR_t = quantile_{1-mu}(d) (linear,
//                         as torch.quantile); with split_vocabulary the quantile and mask are taken
//                         separately on the two halves of the vocabulary (the official code's
//                         is_split_risk_ratio; first half = ceil(V/2), as torch.chunk)
//   entropic (ERM):       (1/mu) log sum_v pi_ref(v) exp(mu d_v)   (a documented extension)
// Everything works on chunks of positions [c, V], so callers never hold [T, V] for both models: the
// values (pass 1) and the gradient with respect to the policy logits (pass 2, analytic, the mask
// and VaR held constant as autograd would) are computed per chunk. The pair loss on the
// per-sequence sums is tdpo_family_loss.
#include <ATen/core/Tensor.h>

#include "kernels/preference_losses.h"

namespace aln::kernels {

enum class TokenDivergence { kSequenceKl, kCvar, kEntropic };

struct DivergenceOptions {
  TokenDivergence kind = TokenDivergence::kSequenceKl;
  double mu = 0.95;               // CVaR level (VaR at the 1 - mu quantile); ERM risk aversion
  bool split_vocabulary = false;  // CVaR only
};

// Per position of a chunk: log pi(y_t), log pi_ref(y_t) and the divergence term, each [c]. No
// gradients (inputs are read, not differentiated).
struct PositionTerms {
  at::Tensor policy_logp;
  at::Tensor reference_logp;
  at::Tensor divergence;
};
PositionTerms position_terms(const at::Tensor& policy_logits, const at::Tensor& reference_logits,
                             const at::Tensor& targets, const DivergenceOptions& options);

// d/dz of sum_t (a_t log pi(y_t) + b_t divergence_t) for one chunk: [c, V] in the logits' dtype.
at::Tensor position_terms_grad(const at::Tensor& policy_logits, const at::Tensor& reference_logits,
                               const at::Tensor& targets, const at::Tensor& a, const at::Tensor& b,
                               const DivergenceOptions& options);

enum class PairVariant { kOne, kTwo };

// TDPO / Ra-DPO on per-pair sums (D = summed divergence of each response):
//   variant 1: -log s(b [h - (D_l - D_w)])      variant 2: -log s(b [h - alpha (D_l - sg(D_w))])
// Differentiable with respect to the policy sums and D_l (and D_w in variant 1).
PairLossOutput tdpo_family_loss(const PairLogprobs& in, const at::Tensor& divergence_chosen,
                                const at::Tensor& divergence_rejected, PairVariant variant, double beta, double alpha);

// The loss on per-sequence sums [2P] (rows 0..P-1 chosen, P..2P-1 rejected) and its derivatives
// with respect to each row's policy log-prob sum and divergence sum: the per-position coefficients
// a and b of position_terms_grad. Uses autograd on [2P] leaves (enabled here even under no-grad).
struct TokenLevelCoefficients {
  PairLossOutput loss;    // loss detached
  at::Tensor policy;      // d loss / d sum log pi, [2P]
  at::Tensor divergence;  // d loss / d D, [2P]
};
TokenLevelCoefficients tdpo_family_coefficients(const at::Tensor& sums_policy, const at::Tensor& sums_reference,
                                                const at::Tensor& sums_divergence, int64_t pairs, PairVariant variant,
                                                double beta, double alpha);

// The whole token-level pair loss on given full logits, through the same chunked passes the
// trainers use: rows 0..P-1 of `sequence` are chosen responses, P..2P-1 rejected. Positions are
// [N, V] logits with their target token and sequence row. Returns the loss, the per-pair sums and
// the gradient of the loss with respect to `policy_logits` ([N, V]). For tests and benchmarks.
struct TokenLevelResult {
  PairLossOutput loss;
  at::Tensor divergence_chosen, divergence_rejected;
  at::Tensor policy_logits_grad;
};
TokenLevelResult token_level_pair_loss(const at::Tensor& policy_logits, const at::Tensor& reference_logits,
                                       const at::Tensor& targets, const at::Tensor& sequence, int64_t pairs,
                                       const DivergenceOptions& options, PairVariant variant, double beta, double alpha,
                                       int64_t chunk);

}  // namespace aln::kernels
