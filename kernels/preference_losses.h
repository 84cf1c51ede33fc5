#pragma once
// Pairwise preference losses on sequence log-probabilities (METHODS.md, "DPO family" and §1 SafeDPO).
// Inputs are per-pair sums over response tokens of log pi(y_t | s_t) for the policy and the frozen
// reference; all tensors are [pairs] in one floating dtype. The definitions follow TRL's DPOTrainer
// so results compare with TRL (parity: tests/parity/preference_loss_parity.py).
#include <ATen/core/Tensor.h>

namespace aln::kernels {

enum class DpoLossType { kSigmoid, kIpo, kHinge, kRobust };

struct PairLogprobs {
  at::Tensor policy_chosen;
  at::Tensor policy_rejected;
  at::Tensor reference_chosen;
  at::Tensor reference_rejected;
  at::Tensor chosen_tokens;    // response-token counts, used by IPO's length normalisation
  at::Tensor rejected_tokens;
};

struct PairLossOutput {
  at::Tensor loss;              // scalar mean over pairs (differentiable)
  at::Tensor per_pair;          // [pairs]
  at::Tensor rewards_chosen;    // beta * (policy - reference), detached
  at::Tensor rewards_rejected;
  // 0-dim float64 on the inputs' device (read with the step's other scalars, not here):
  at::Tensor accuracy;          // mean[rewards_chosen > rewards_rejected]
  at::Tensor margin;            // mean[rewards_chosen - rewards_rejected]
};

// h = (pi_w - ref_w) - (pi_l - ref_l):
//   sigmoid: -log s(b h)(1 - eps) - log s(-b h) eps      hinge: relu(1 - b h)
//   ipo:     (h_w/|y_w| - h_l/|y_l| - 1/(2b))^2          robust: [-(1-eps) log s(b h) + eps log s(-b h)] / (1 - 2 eps)
PairLossOutput dpo_loss(const PairLogprobs& in, DpoLossType type, double beta, double label_smoothing);

// SafeDPO on transformed pairs: -log s(b h - (unsafe_l - unsafe_w) * delta), delta in logit units
// (not multiplied by beta). unsafe_* are 0/1 tensors [pairs]; after the transform unsafe_w is 0.
PairLossOutput safedpo_loss(const PairLogprobs& in, const at::Tensor& unsafe_chosen,
                            const at::Tensor& unsafe_rejected, double beta, double delta);

// The SafeDPO data transform T for one pair, given the helpfulness-preferred (w) and other (l)
// responses' unsafe flags: keep when w is safe, swap when only w is unsafe, drop when both are.
enum class SafePairAction { kKeep, kSwap, kDrop };
SafePairAction safedpo_action(bool unsafe_preferred, bool unsafe_other);

}  // namespace aln::kernels
