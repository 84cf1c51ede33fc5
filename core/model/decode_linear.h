#pragma once
// x W^T (+ bias) for the few rows of a decoding step. At batch 8 a generation step multiplies [8, K]
// by every weight matrix of the model; the BLAS LibTorch ships runs such skinny products at a small
// fraction of this CPU's AVX-512 speed. This kernel streams each weight row once and forms all the
// step's dot products with it (AVX-512, chosen at run time); elsewhere (more rows, autograd, other
// dtypes or CPUs without AVX-512) it is at::linear. Results differ from at::linear only in the
// order of the float32 additions (relative differences around 1e-7).
#include <ATen/core/Tensor.h>

namespace aln::model {

// Rows up to which decode_linear uses its own kernel.
inline constexpr int64_t kDecodeLinearMaxRows = 16;

// x: [..., K], weight: [N, K], bias: [N] or undefined. Same result shape as at::linear.
at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// Whether decode_linear would use its own kernel for these operands (tests, benchmarks).
bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight);

}  // namespace aln::model
