#pragma once
// x W^T (+ bias) for the model's linear layers. Without autograd (generation, reference and reward
// scoring, evaluation): The BLAS LibTorch ships takes its AVX2 path on AMD CPUs and runs skinny products
// (the few rows of a decoding step) at a small fraction of the CPU's speed. Two AVX-512 kernels,
// chosen at run time, take float32 CPU operands without autograd:
//  - at most kDecodeLinearMaxRows rows (a decoding step): each weight row is streamed once and
//    multiplied into every row's dot product (a weight whose rows [K] are not contiguous, such as
//    GPT-2's Conv1D stored [in, out] and seen transposed, goes to at::linear instead of being copied);
//  - more rows (a prompt, a batch being scored): the cache-blocked GEMM of gemm_avx512.h, which reads
//    the weight through its strides.
// In training (a float32 CPU operand needs a gradient), a linear layer of autograd's own whose three
// products (x W^T forward, dy W and dy^T x backward) each go through the GEMM where it measured faster
// than LibTorch's BLAS for that product's shape (gemm_wins), the BLAS elsewhere.
// Other dtypes or devices, and CPUs without AVX-512, get at::linear. Results differ from at::linear
// only in the order of the float32 additions (relative differences around 1e-7). What the GEMM and
// the decoding kernel compute does not depend on the thread count; the products left to the BLAS are
// as deterministic as it is (the same shape on the same threads gives the same bits).
#include <ATen/core/Tensor.h>

#include "core/model/gemm_avx512.h"  // gemm_wins, LinearProduct
#include "core/model/scratch_pool.h"

namespace aln::model {

// Rows up to which fast_linear uses the decoding-step kernel.
inline constexpr int64_t kDecodeLinearMaxRows = 16;

// x: [..., K], weight: [N, K], bias: [N] or undefined. Same result shape as at::linear. With
// `scratch`, the GEMM kernel's output and packed weight come from that pool (scratch_pool.h).
at::Tensor fast_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {},
                       ScratchPool* scratch = nullptr);

// Which kernel fast_linear would use for these operands (tests, benchmarks).
bool decode_kernel_applies(const at::Tensor& x, const at::Tensor& weight);
bool gemm_kernel_applies(const at::Tensor& x, const at::Tensor& weight);

}  // namespace aln::model
