#pragma once
// Shared by the DPO-family trainers: policy and reference sequence log-probs of a batch of pairs.
#include "kernels/preference_losses.h"
#include "trainers/trainer.h"

namespace aln::trainers {

struct PairForward {
  kernels::PairLogprobs logprobs;
  int64_t tokens = 0;
};

// Policy sums with gradients; reference sums from the examples' cache, else from context.reference.
PairForward pair_forward(const std::vector<const buffer::Example*>& batch, StepContext& ctx);

// The trainer output of a pairwise loss: the loss plus TRL-named reward metrics.
LossOutput pair_loss_output(const PairForward& forward, const kernels::PairLossOutput& loss);

}  // namespace aln::trainers
