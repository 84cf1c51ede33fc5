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
  double likelihood = 0;         // the positive (MLE) term
  double unlikelihood = 0;       // the toxic term, before lambda
  double weighted_share = 0;     // share of toxic tokens with a non-zero weight
  double toxic_probability = 0;  // mean p(y-_t) over weighted tokens
};

// Per-token log-probs [B, T] of the positive and toxic responses with their masks [B, T] and the
// toxic weights [B, T] (zero outside the mask).
UnlikelihoodOutput unlikelihood_loss(const at::Tensor& positive_logps, const at::Tensor& positive_mask,
                                     const at::Tensor& toxic_logps, const at::Tensor& toxic_mask,
                                     const at::Tensor& toxic_weights, double lambda);

}  // namespace aln::kernels
