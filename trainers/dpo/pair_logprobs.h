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

// Reference sums for examples (no gradients), used to fill the cache.
void reference_pair_logprobs(const model::DecoderModel& reference, const std::vector<buffer::Example*>& batch,
                             int64_t pad_id);

}  // namespace aln::trainers
