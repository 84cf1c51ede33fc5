// The elementwise half of the fused output projection + log-softmax on CUDA (kernels/fused_logprobs.cpp):
// a vocabulary tile's logits [n, size] (row stride ld) come from one GEMM in the training dtype, and
// these kernels read them in that dtype, computing in float32:
// - tile_logsumexp: one block per row; each thread folds a strided slice into an online log-sum-exp
//   state, the block merges the states with a halving tree in shared memory, and thread 0 folds the
//   result into the row's running state and adds the picked logit when the target is in the tile.
//   Each logit is read once; nothing [n, size] is written.
// - tile_softmax_grad: one pass that overwrites each logit with its gradient, in place, in the same
//   dtype (bfloat16 logits give bfloat16 gradients for the two backward GEMMs, as autocast would).
// The arithmetic is kernels/fused_tile_math.h's, which a CPU test replays in this order.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_launch.h"
#include "kernels/fused_tile_math.h"

namespace aln::kernels::cuda::detail {
namespace {

constexpr int kThreads = 256;
// Columns one block of the gradient kernel covers (kThreads x 8 elements per thread); the host side
// checks that a tile needs at most 65,535 such blocks per row (a grid's second dimension).
constexpr int64_t kGradColumnsPerBlock = kTileGradColumnsPerBlock;
static_assert(kGradColumnsPerBlock % kThreads == 0, "whole rounds of the block's threads");

struct ToFloat {
  __host__ __device__ __forceinline__ float operator()(float x) const { return x; }
  __host__ __device__ __forceinline__ float operator()(__nv_bfloat16 x) const { return __bfloat162float(x); }
};

template <typename T>
struct FromFloat;
template <>
struct FromFloat<float> {
  __host__ __device__ __forceinline__ float operator()(float x) const { return x; }
};
template <>
struct FromFloat<__nv_bfloat16> {
  __host__ __device__ __forceinline__ __nv_bfloat16 operator()(float x) const { return __float2bfloat16_rn(x); }
};

template <typename T>
__global__ void tile_logsumexp_kernel(const T* __restrict__ logits, int64_t size, int64_t ld, float temperature,
                                      const int64_t* __restrict__ targets, int64_t start, float* running_max,
                                      float* running_sum, float* picked) {
  __shared__ LseState<float> partial[kThreads];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * ld;
  partial[threadIdx.x] = tile_lane_state(x, size, temperature, threadIdx.x, blockDim.x, ToFloat{});
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] = lse_combine(partial[threadIdx.x], partial[threadIdx.x + stride]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    tile_row_finish(partial[0], x, size, temperature, targets[row], start, running_max + row, running_sum + row,
                    picked + row, ToFloat{});
  }
}

template <typename T>
__global__ void tile_softmax_grad_kernel(T* logits, int64_t size, int64_t ld, float temperature,
                                         const int64_t* __restrict__ targets, int64_t start,
                                         const float* __restrict__ lse, const float* __restrict__ grad) {
  const int64_t row = blockIdx.x;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * kGradColumnsPerBlock;
  const int64_t last = first + kGradColumnsPerBlock < size ? first + kGradColumnsPerBlock : size;
  tile_grad_lane(logits + row * ld, first, last, threadIdx.x, blockDim.x, temperature, targets[row] - start, lse[row],
                 grad[row], ToFloat{}, FromFloat<T>{});
}

template <typename T>
int launch_lse(const void* logits, int64_t n, int64_t size, int64_t ld, float temperature, const int64_t* targets,
               int64_t start, float* running_max, float* running_sum, float* picked, cudaStream_t stream) {
  tile_logsumexp_kernel<T><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      static_cast<const T*>(logits), size, ld, temperature, targets, start, running_max, running_sum, picked);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_grad(void* logits, int64_t n, int64_t size, int64_t ld, float temperature, const int64_t* targets,
                int64_t start, const float* lse, const float* grad, cudaStream_t stream) {
  const dim3 blocks(static_cast<unsigned>(n),
                    static_cast<unsigned>((size + kGradColumnsPerBlock - 1) / kGradColumnsPerBlock));
  tile_softmax_grad_kernel<T>
      <<<blocks, kThreads, 0, stream>>>(static_cast<T*>(logits), size, ld, temperature, targets, start, lse, grad);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_tile_logsumexp(const void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                          const int64_t* targets, int64_t start, float* running_max, float* running_sum, float* picked,
                          void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case TileDtype::kFloat32:
      return launch_lse<float>(logits, n, size, ld, temperature, targets, start, running_max, running_sum, picked, s);
    case TileDtype::kBFloat16:
      return launch_lse<__nv_bfloat16>(logits, n, size, ld, temperature, targets, start, running_max, running_sum,
                                       picked, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int launch_tile_softmax_grad(void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                             const int64_t* targets, int64_t start, const float* lse, const float* grad, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case TileDtype::kFloat32:
      return launch_grad<float>(logits, n, size, ld, temperature, targets, start, lse, grad, s);
    case TileDtype::kBFloat16:
      return launch_grad<__nv_bfloat16>(logits, n, size, ld, temperature, targets, start, lse, grad, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace aln::kernels::cuda::detail
