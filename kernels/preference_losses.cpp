#include "kernels/preference_losses.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/relu.h>

#include "core/error.h"

namespace aln::kernels {
namespace {

void check_inputs(const PairLogprobs& in) {
  for (const at::Tensor* t : {&in.policy_chosen, &in.policy_rejected, &in.reference_chosen, &in.reference_rejected}) {
    ALN_CHECK(t->defined() && t->dim() == 1, "pair log-probs must be 1-D [pairs]");
    ALN_CHECK(t->size(0) == in.policy_chosen.size(0), "all pair log-prob tensors must have the same length");
  }
}

PairLossOutput finish(const PairLogprobs& in, at::Tensor per_pair, double beta) {
  PairLossOutput out;
  out.per_pair = per_pair;
  out.loss = per_pair.mean();
  out.rewards_chosen = (beta * (in.policy_chosen - in.reference_chosen)).detach();
  out.rewards_rejected = (beta * (in.policy_rejected - in.reference_rejected)).detach();
  out.accuracy = (out.rewards_chosen > out.rewards_rejected).to(at::kDouble).mean();
  out.margin = (out.rewards_chosen - out.rewards_rejected).to(at::kDouble).mean();
  return out;
}

}  // namespace

PairLossOutput dpo_loss(const PairLogprobs& in, DpoLossType type, double beta, double eps) {
  check_inputs(in);
  ALN_CHECK(beta > 0, "beta must be positive, got ", beta);
  const at::Tensor chosen_ratio = in.policy_chosen - in.reference_chosen;
  const at::Tensor rejected_ratio = in.policy_rejected - in.reference_rejected;
  const at::Tensor h = chosen_ratio - rejected_ratio;
  at::Tensor per_pair;
  switch (type) {
    case DpoLossType::kSigmoid:
      per_pair = -at::log_sigmoid(beta * h) * (1 - eps) - at::log_sigmoid(-beta * h) * eps;
      break;
    case DpoLossType::kHinge:
      per_pair = at::relu(1 - beta * h);
      break;
    case DpoLossType::kIpo: {
      ALN_CHECK(in.chosen_tokens.defined() && in.rejected_tokens.defined(), "ipo needs response token counts");
      // Length-normalised, as current TRL: the squared loss would otherwise scale with length.
      const at::Tensor normalised = chosen_ratio / at::clamp_min(in.chosen_tokens.to(h.scalar_type()), 1.0) -
                                    rejected_ratio / at::clamp_min(in.rejected_tokens.to(h.scalar_type()), 1.0);
      per_pair = at::pow(normalised - 1 / (2 * beta), 2);
      break;
    }
    case DpoLossType::kRobust:
      ALN_CHECK(eps >= 0 && eps < 0.5, "robust DPO needs label_smoothing in [0, 0.5), got ", eps);
      per_pair = (-(1 - eps) * at::log_sigmoid(beta * h) + eps * at::log_sigmoid(-beta * h)) / (1 - 2 * eps);
      break;
  }
  return finish(in, per_pair, beta);
}

PairLossOutput safedpo_loss(const PairLogprobs& in, const at::Tensor& unsafe_chosen,
                            const at::Tensor& unsafe_rejected, double beta, double delta) {
  check_inputs(in);
  ALN_CHECK(beta > 0, "beta must be positive, got ", beta);
  ALN_CHECK(delta >= 0, "delta must be >= 0, got ", delta);
  const at::Tensor h = (in.policy_chosen - in.reference_chosen) - (in.policy_rejected - in.reference_rejected);
  const at::Tensor margin = (unsafe_rejected - unsafe_chosen).to(h.scalar_type()) * delta;
  return finish(in, -at::log_sigmoid(beta * h - margin), beta);
}

SafePairAction safedpo_action(bool unsafe_preferred, bool unsafe_other) {
  if (!unsafe_preferred) return SafePairAction::kKeep;
  return unsafe_other ? SafePairAction::kDrop : SafePairAction::kSwap;
}

}  // namespace aln::kernels
