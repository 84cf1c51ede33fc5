#pragma once
// Token log-probabilities: out[i] = logits[i, targets[i]] - logsumexp(logits[i, :]).
// The op every alignment loss starts from (policy and reference log-probs of response tokens).
// Three implementations, compared by tests: a plain CPU reference, the LibTorch composite used by
// training (autograd-capable), and a CUDA kernel (kernels/cuda/).
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace aln::kernels {

// CPU reference, two passes per row (max, then sum), no shared code with the fast paths.
template <typename T>
void token_logprobs_reference(const T* logits, const int64_t* targets, int64_t rows, int64_t vocab, T* out);

// d out[i] / d logits[i, v] = 1[v == target] - softmax(logits[i])_v, times grad_out[i].
template <typename T>
void token_logprobs_backward_reference(const T* logits, const int64_t* targets, const T* grad_out, int64_t rows,
                                       int64_t vocab, T* grad_logits);

// LibTorch composite: logits [..., V] (floating), targets [...] (int64) -> [...] in the logits' dtype
// (bfloat16/float16 inputs are reduced in float32 and cast back). Differentiable.
at::Tensor token_logprobs(const at::Tensor& logits, const at::Tensor& targets);

// Per-sequence sums of response-token log-probs from logits [B, T, V] of sequences input_ids [B, T]
// (logits at t predict the token at t + 1); response_mask [B, T] marks response tokens.
struct ResponseLogprobs {
  at::Tensor sums;       // [B]
  at::Tensor tokens;     // [B] response tokens counted
  at::Tensor per_token;  // [B, T-1], zero outside the response
};
ResponseLogprobs response_logprobs(const at::Tensor& logits, const at::Tensor& input_ids,
                                   const at::Tensor& response_mask);

}  // namespace aln::kernels
