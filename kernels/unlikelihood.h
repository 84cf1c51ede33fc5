#pragma once
// PT-ALIGN's loss (METHODS.md §2): likelihood on the positive response plus fine-grained
// unlikelihood on the toxic one,
//   L = mean_pos[ -sum_t log p(y+_t) / |y+| ] + lambda * mean_tox[ -sum_t w_t log(1 - p(y-_t)) / sum_t w_t ]
// with log(1 - p) = log1p(-exp(logp)), logp clamped to <= log(1 - 1e-6). Rows whose weights sum to
// zero contribute no unlikelihood and are left out of its mean (0 when no row has a weight).
#include <ATen/core/Tensor.h>

namespace aln::kernels {

struct UnlikelihoodOutput {
  at::Tensor loss;               // scalar, differentiable
  // 0-dim tensors on the inputs' device (read with the step's other scalars, not here):
  at::Tensor likelihood;         // the positive (MLE) term
  at::Tensor unlikelihood;       // the toxic term, before lambda
  at::Tensor weighted_share;     // share of toxic tokens with a non-zero weight (float64)
  at::Tensor toxic_probability;  // mean p(y-_t) over weighted tokens (float64)
};

// Per-token log-probs [B, T] of the positive and toxic responses with their masks [B, T] and the
// toxic weights [B, T] (zero outside the mask).
UnlikelihoodOutput unlikelihood_loss(const at::Tensor& positive_logps, const at::Tensor& positive_mask,
                                     const at::Tensor& toxic_logps, const at::Tensor& toxic_mask,
                                     const at::Tensor& toxic_weights, double lambda);

}  // namespace aln::kernels
