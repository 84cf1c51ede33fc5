#include "kernels/token_logprobs.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/logsumexp.h>

#include <cmath>
#include <limits>

#include "core/error.h"

namespace aln::kernels {

template <typename T>
void token_logprobs_reference(const T* logits, const int64_t* targets, int64_t rows, int64_t vocab, T* out) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = logits + i * vocab;
    ALN_CHECK(targets[i] >= 0 && targets[i] < vocab, "target ", targets[i], " of row ", i, " is outside [0, ", vocab, ")");
    T max = -std::numeric_limits<T>::infinity();
    for (int64_t v = 0; v < vocab; ++v) max = row[v] > max ? row[v] : max;
    T sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    out[i] = row[targets[i]] - (max + std::log(sum));
  }
}

template <typename T>
void token_logprobs_backward_reference(const T* logits, const int64_t* targets, const T* grad_out, int64_t rows,
                                       int64_t vocab, T* grad_logits) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = logits + i * vocab;
    T* grad = grad_logits + i * vocab;
    T max = -std::numeric_limits<T>::infinity();
    for (int64_t v = 0; v < vocab; ++v) max = row[v] > max ? row[v] : max;
    T sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    for (int64_t v = 0; v < vocab; ++v) {
      const T p = std::exp(row[v] - max) / sum;
      grad[v] = grad_out[i] * ((v == targets[i] ? T(1) : T(0)) - p);
    }
  }
}

template void token_logprobs_reference<float>(const float*, const int64_t*, int64_t, int64_t, float*);
template void token_logprobs_reference<double>(const double*, const int64_t*, int64_t, int64_t, double*);
template void token_logprobs_backward_reference<float>(const float*, const int64_t*, const float*, int64_t, int64_t,
                                                       float*);
template void token_logprobs_backward_reference<double>(const double*, const int64_t*, const double*, int64_t,
                                                        int64_t, double*);

at::Tensor token_logprobs(const at::Tensor& logits, const at::Tensor& targets) {
  ALN_CHECK(logits.dim() >= 1 && logits.is_floating_point(), "logits must be a floating tensor [..., vocab]");
  ALN_CHECK(targets.scalar_type() == at::kLong, "targets must be int64");
  ALN_CHECK(logits.dim() == targets.dim() + 1, "targets must have the logits' shape without the vocab axis");
  for (int64_t d = 0; d < targets.dim(); ++d) {
    ALN_CHECK(logits.size(d) == targets.size(d), "shape mismatch at dim ", d, ": logits ", logits.size(d),
              " vs targets ", targets.size(d));
  }
  // Low-precision logits are reduced in float32: a bf16 log-sum-exp over 50k entries loses digits.
  const bool upcast = logits.scalar_type() == at::kBFloat16 || logits.scalar_type() == at::kHalf;
  const at::Tensor x = upcast ? logits.to(at::kFloat) : logits;
  // gather - logsumexp never materialises the full log-softmax (one [..., V] temporary less).
  at::Tensor picked = at::gather(x, -1, targets.unsqueeze(-1)).squeeze(-1);
  at::Tensor out = picked - at::logsumexp(x, {-1});
  return upcast ? out.to(logits.scalar_type()) : out;
}

ResponseLogprobs response_logprobs(const at::Tensor& logits, const at::Tensor& input_ids,
                                   const at::Tensor& response_mask) {
  const int64_t t = logits.size(1);
  ALN_CHECK(t >= 2, "sequences need at least two tokens to score a response");
  at::Tensor mask = response_mask.narrow(1, 1, t - 1).to(logits.scalar_type());
  at::Tensor lp = token_logprobs(logits.narrow(1, 0, t - 1), input_ids.narrow(1, 1, t - 1)) * mask;
  return {lp.sum(1), mask.sum(1), lp};
}

}  // namespace aln::kernels
