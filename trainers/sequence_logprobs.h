#pragma once
// Log-probabilities of the response tokens of a batch under a causal LM, projecting only the
// positions that are scored: the hidden states of all positions are computed, but the output
// projection and log-softmax run on the positions that predict a response token, fused over
// vocabulary tiles (kernels/fused_logprobs.h), so the [tokens, V] logits and their gradient — the
// largest activations of training — never exist, or, on the CPU where they are at most 128 MiB, one
// tile of all of them is kept for the backward pass (which turns it into its gradient in place)
// instead of recomputed: kernels::fused_logprobs_preferred. Used by every language-model trainer.
#include "core/buffer/buffer.h"
#include "core/model/decoder.h"
#include "kernels/token_logprobs.h"

namespace aln::trainers {

// The result of kernels::response_logprobs(model.logits(...), ...) (to float rounding: the tiles
// add the log-sum-exp in another order): per-row sums and token counts
// over the response tokens (sums differentiable), and the per-token values [B, T-1] (zero where no
// response token is scored).
// `temperature` divides the logits first (GRPO scores its samples under the distribution it sampled
// from, as TRL does).
kernels::ResponseLogprobs response_logprobs(const model::DecoderModel& model, const buffer::SequenceBatch& batch,
                                            double temperature = 1.0);

// The per-row sums response_logprobs gives, from its per-token values [B, T-1] (the same numbers
// added in the same order, so the same bits): for log-probs that came from elsewhere (the
// reference's ranks).
at::Tensor response_sums(const at::Tensor& per_token, const buffer::SequenceBatch& batch);

// The reference's response log-prob sums of preference pairs (no gradients), written into the
// examples (reference_chosen / reference_rejected): what the reference cache holds and what the
// reference ranks compute up front for methods that take per-pair sums.
void reference_pair_logprobs(const model::DecoderModel& reference, const std::vector<buffer::Example*>& batch,
                             int64_t pad_id);

}  // namespace aln::trainers
