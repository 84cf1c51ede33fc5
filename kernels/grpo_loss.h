#pragma once
// GRPO's loss on per-token log-probabilities (METHODS.md, "GRPO"; definitions as TRL's GRPOTrainer
// so results compare with TRL; parity: tests/parity/grpo_parity.py).
// Per completion token t of row i: rho = exp(logp - old_logp),
//   l = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) + beta KL_k3,
//   KL_k3 = exp(ref - logp) - (ref - logp) - 1.
// Sequence mean ("grpo"): mean over rows of the row's masked token mean. Token mean ("bnpo"/"dapo"
// in one process): masked sum over the batch / token count.
#include <ATen/core/Tensor.h>

namespace aln::kernels {

enum class GrpoNormalization { kSequenceMean, kTokenMean };

struct GrpoLossInputs {
  at::Tensor logps;       // [B, T] policy, differentiable
  at::Tensor old_logps;   // [B, T] the policy that sampled; undefined: logps.detach() (on-policy)
  at::Tensor ref_logps;   // [B, T] reference; needed when beta > 0
  at::Tensor advantages;  // [B]
  at::Tensor mask;        // [B, T] 1 on completion tokens
};

struct GrpoLossOutput {
  at::Tensor loss;       // scalar
  // 0-dim tensors on the inputs' device (read with the step's other scalars, not here):
  at::Tensor kl;         // masked token mean of KL_k3 (0 when beta is 0 and no reference was given)
  at::Tensor clip_low;   // share of tokens clipped below (rho < 1 - eps_low, A < 0)
  at::Tensor clip_high;  // share clipped above (rho > 1 + eps_high, A > 0)
};

GrpoLossOutput grpo_loss(const GrpoLossInputs& in, double epsilon_low, double epsilon_high, double beta,
                         GrpoNormalization normalization);

// Group-relative advantages: rewards [G x groups] laid out group after group;
// A = (r - mean_group) / (std_group + 1e-4) with the unbiased std (as torch.std), or r - mean when
// `scale` is false.
at::Tensor group_advantages(const at::Tensor& rewards, int64_t group_size, bool scale = true);

}  // namespace aln::kernels
