#include "kernels/hair.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "kernels/grpo_loss.h"

namespace aln::kernels {

at::Tensor hair_similarity(const at::Tensor& output, const at::Tensor& demonstration) {
  ALN_CHECK(output.dim() == 2 && demonstration.dim() == 2 && demonstration.size(0) > 0,
            "hair_similarity: [K, H] and [L, H] sentence embeddings expected, L >= 1");
  if (output.size(0) == 0) return at::zeros({}, demonstration.options().dtype(at::kDouble));
  const at::Tensor o = output.to(at::kDouble);
  const at::Tensor d = demonstration.to(at::kDouble);
  // Normalised rows; a zero embedding (cannot happen for mean-pooled hidden states, but a custom
  // encoder might return one) gets similarity 0 instead of NaN.
  const at::Tensor on = o / o.norm(2, {1}, true).clamp_min(1e-12);
  const at::Tensor dn = d / d.norm(2, {1}, true).clamp_min(1e-12);
  const at::Tensor s = at::matmul(on, dn.t());  // [K, L]
  return std::get<0>(s.max(1)).mean();
}

at::Tensor hair_data_alpha(const at::Tensor& delta, int64_t group_size) {
  ALN_CHECK(delta.dim() == 1 && delta.size(0) % group_size == 0, "hair_data_alpha: rows must be whole groups");
  const at::Tensor d = delta.to(at::kDouble).view({-1, group_size});
  return (at::sigmoid(d) / at::sigmoid(d.mean(1, true))).reshape({-1});
}

HairResponsiveness hair_model_alpha(const at::Tensor& gaps, int64_t group_size, double tau) {
  ALN_CHECK(gaps.dim() == 1 && gaps.size(0) % group_size == 0, "hair_model_alpha: rows must be whole groups");
  const at::Tensor r = gaps.to(at::kDouble).view({-1, group_size});
  const at::Tensor mean = r.mean(1, true);
  const at::Tensor keep = ((r - mean).pow(2) <= tau).to(at::kDouble);
  const at::Tensor count = keep.sum(1, true);
  // A group whose every gap is an outlier (two far-apart clusters) keeps them all: R_P = mean R.
  const at::Tensor kept_mean = at::where(count > 0, (r * keep).sum(1, true) / count.clamp_min(1), mean);
  HairResponsiveness out;
  out.alpha = (at::sigmoid(kept_mean) / at::sigmoid(mean)).reshape({-1});
  out.kept = keep.reshape({-1});
  return out;
}

at::Tensor hair_advantages(const at::Tensor& rewards, const at::Tensor& alpha_d, const at::Tensor& alpha_m,
                           int64_t group_size) {
  const at::Tensor a = group_advantages(rewards.to(at::kDouble), group_size, true);
  const at::Tensor m = alpha_m.to(at::kDouble).repeat_interleave(group_size);
  return a * alpha_d.to(at::kDouble) * m;
}

}  // namespace aln::kernels
