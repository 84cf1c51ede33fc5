#include "kernels/grpo_loss.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace aln::kernels {

GrpoLossOutput grpo_loss(const GrpoLossInputs& in, double eps_low, double eps_high, double beta,
                         GrpoNormalization normalization) {
  ALN_CHECK(in.logps.dim() == 2 && in.mask.sizes() == in.logps.sizes(), "logps and mask must both be [rows, tokens]");
  ALN_CHECK(in.advantages.dim() == 1 && in.advantages.size(0) == in.logps.size(0), "advantages must be [rows]");
  const at::Tensor mask = in.mask.to(in.logps.scalar_type());
  const at::Tensor old = in.old_logps.defined() ? in.old_logps : in.logps.detach();
  const at::Tensor a = in.advantages.to(in.logps.scalar_type()).unsqueeze(1);
  const at::Tensor rho = at::exp(in.logps - old);
  const at::Tensor clipped = at::clamp(rho, 1 - eps_low, 1 + eps_high);
  at::Tensor per_token = -at::min(rho * a, clipped * a);
  GrpoLossOutput out;
  const at::Tensor tokens = mask.sum().clamp_min(1);
  if (beta != 0) {
    ALN_CHECK(in.ref_logps.defined(), "beta > 0 needs the reference log-probs");
    const at::Tensor diff = in.ref_logps - in.logps;
    const at::Tensor kl = at::exp(diff) - diff - 1;
    per_token = per_token + beta * kl;
    out.kl = (kl.detach() * mask).sum() / tokens;
  } else {
    out.kl = at::zeros({}, in.logps.options().dtype(at::kDouble));
  }
  if (normalization == GrpoNormalization::kSequenceMean) {
    out.loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1)).mean();
  } else {
    out.loss = (per_token * mask).sum() / tokens;
  }
  const at::Tensor r = rho.detach();
  out.clip_low = (((r < 1 - eps_low) & (a < 0)).to(mask.scalar_type()) * mask).sum() / tokens;
  out.clip_high = (((r > 1 + eps_high) & (a > 0)).to(mask.scalar_type()) * mask).sum() / tokens;
  return out;
}

at::Tensor group_advantages(const at::Tensor& rewards, int64_t group_size, bool scale) {
  ALN_CHECK(group_size >= 2 && rewards.dim() == 1 && rewards.size(0) % group_size == 0,
            "rewards must be [groups x group_size] with group_size >= 2");
  const at::Tensor grouped = rewards.view({-1, group_size});
  const at::Tensor centered = grouped - grouped.mean(1, true);
  if (!scale) return centered.reshape(-1);
  return (centered / (grouped.std(1, /*unbiased=*/true, /*keepdim=*/true) + 1e-4)).reshape(-1);
}

}  // namespace aln::kernels
