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

}  // namespace aln::kernels
