#pragma once
// A float32 [rows, cols] tensor (any strides) as an operand of gemm_avx512, read as it is or
// transposed, without a copy: the GEMM follows the strides. Kept apart from gemm_avx512.h, which
// stays free of LibTorch headers.
#include <ATen/core/Tensor.h>

#include "core/model/gemm_avx512.h"

namespace aln::model {

inline MatrixView matrix_of(const at::Tensor& t) { return {t.const_data_ptr<float>(), t.stride(0), t.stride(1)}; }
inline MatrixView transposed_of(const at::Tensor& t) { return {t.const_data_ptr<float>(), t.stride(1), t.stride(0)}; }

}  // namespace aln::model
