#include "kernels/unlikelihood.h"

#include <ATen/ATen.h>

#include <cmath>

#include "core/error.h"

namespace aln::kernels {

UnlikelihoodOutput unlikelihood_loss(const at::Tensor& pos, const at::Tensor& pos_mask, const at::Tensor& tox,
                                     const at::Tensor& tox_mask, const at::Tensor& weights, double lambda) {
  ALN_CHECK(pos.dim() == 2 && pos_mask.sizes() == pos.sizes(), "positive log-probs and mask must be [rows, tokens]");
  ALN_CHECK(tox.dim() == 2 && tox_mask.sizes() == tox.sizes() && weights.sizes() == tox.sizes(),
            "toxic log-probs, mask and weights must be [rows, tokens]");
  const auto dtype = pos.scalar_type();
  const at::Tensor pm = pos_mask.to(dtype);
  const at::Tensor w = (weights.to(dtype) * tox_mask.to(dtype));
  UnlikelihoodOutput out;
  const at::Tensor mle = (-(pos * pm).sum(1) / pm.sum(1).clamp_min(1)).mean();
  const at::Tensor clamped = at::clamp_max(tox, std::log(1 - 1e-6));
  const at::Tensor log_not = at::log1p(-at::exp(clamped));
  const at::Tensor wsum = w.sum(1);
  const at::Tensor has = (wsum > 0).to(dtype);
  const at::Tensor rows = has.sum();
  const at::Tensor per_row = -(w * log_not).sum(1) / wsum.clamp_min(1e-12) * has;
  const at::Tensor ul = per_row.sum() / rows.clamp_min(1);
  out.loss = mle + lambda * ul;
  out.likelihood = mle.detach();
  out.unlikelihood = ul.detach();
  // Where there is nothing to share out the result is 0 (the division's NaN is never chosen).
  const at::Tensor tokens = tox_mask.to(at::kDouble).sum();
  out.weighted_share = at::where(tokens > 0, (w > 0).to(at::kDouble).sum() / tokens, at::zeros_like(tokens));
  const at::Tensor wtotal = w.detach().to(at::kDouble).sum();
  out.toxic_probability = at::where(
      wtotal > 0, (w.detach().to(at::kDouble) * tox.detach().exp().to(at::kDouble)).sum() / wtotal, at::zeros_like(wtotal));
  return out;
}

}  // namespace aln::kernels
