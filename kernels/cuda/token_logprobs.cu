// CUDA token log-probs. CPU reference: kernels/token_logprobs.cpp (token_logprobs_reference).
// One block per row: each thread folds a strided slice of the row into an online log-sum-exp
// state (kernels/logsumexp_math.h), the block merges the states with a shared-memory tree, and
// thread 0 writes logits[target] - lse. Reads each logit once and needs no [rows, vocab] temporary.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_launch.h"
#include "kernels/logsumexp_math.h"

namespace aln::kernels::cuda::detail {
namespace {

constexpr int kThreads = 256;

__global__ void token_logprobs_kernel(const float* __restrict__ logits, const int64_t* __restrict__ targets,
                                      int64_t vocab, float* __restrict__ out) {
  __shared__ LseState<float> partial[kThreads];
  const int64_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  LseState<float> state = lse_empty<float>();
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) state = lse_push(state, x[v]);
  partial[threadIdx.x] = state;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] = lse_combine(partial[threadIdx.x], partial[threadIdx.x + stride]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const int64_t t = targets[row];
    // An out-of-range target gives NaN instead of an out-of-bounds read; hosts validate first.
    out[row] = (t >= 0 && t < vocab) ? x[t] - lse_value(partial[0]) : NAN;
  }
}

}  // namespace

int get_device_count(int* count) {
  const cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess) cudaGetLastError();  // clear the sticky error for later calls
  return static_cast<int>(err);
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

int launch_token_logprobs_f32(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* out,
                              void* stream) {
  token_logprobs_kernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      logits, targets, vocab, out);
  return static_cast<int>(cudaGetLastError());
}

int device_alloc(void** ptr, int64_t bytes) { return static_cast<int>(cudaMalloc(ptr, static_cast<size_t>(bytes))); }
int device_free(void* ptr) { return static_cast<int>(cudaFree(ptr)); }
int copy_to_device(void* dst, const void* src, int64_t bytes) {
  return static_cast<int>(cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice));
}
int copy_to_host(void* dst, const void* src, int64_t bytes) {
  return static_cast<int>(cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost));
}

}  // namespace aln::kernels::cuda::detail
