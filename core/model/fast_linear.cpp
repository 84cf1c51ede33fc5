#include "core/model/fast_linear.h"

#include "core/model/gemm_avx512.h"  // (defines ALN_X86_KERNELS)
#if ALN_X86_KERNELS
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

namespace aln::model {
namespace {

using RowsFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t);

#if ALN_X86_KERNELS
// GCC 12's _mm512_reduce_add_ps trips a false "may be used uninitialized" inside its own header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// y[i, r] = sum_j x[i, j] * w[r, j] for rows r in [r0, r1): each weight row is loaded once and
// multiplied into M accumulators (registers: M is a template argument).
template <int M>
__attribute__((target("avx512f"))) void rows_avx512(const float* x, int64_t k, const float* w, int64_t r0, int64_t r1,
                                                    float* y, int64_t n) {
  const int64_t full = k / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (k - full)) - 1u);
  for (int64_t r = r0; r < r1; ++r) {
    const float* wr = w + r * k;
    __m512 acc[M];
    // (Fully unrolled, so the accumulators live in registers at -O2 too.)
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t j = 0; j < full; j += 16) {
      const __m512 wv = _mm512_loadu_ps(wr + j);
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i) acc[i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + i * k + j), acc[i]);
    }
    if (full < k) {
      const __m512 wv = _mm512_maskz_loadu_ps(tail, wr + full);
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i) acc[i] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x + i * k + full), acc[i]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) y[i * n + r] = _mm512_reduce_add_ps(acc[i]);
  }
}

#pragma GCC diagnostic pop

template <int... Ms>
RowsFn pick(int m, std::integer_sequence<int, Ms...>) {
  RowsFn fn = nullptr;
  ((fn = (m == Ms + 1 ? &rows_avx512<Ms + 1> : fn)), ...);
  return fn;
}
#else
// Never called: own_kernels_apply() is false without the x86 kernels.
template <int... Ms>
RowsFn pick(int, std::integer_sequence<int, Ms...>) {
  return nullptr;
}
#endif

// Float32 CPU operands without autograd, on a CPU with AVX-512: the cases our kernels take.
bool own_kernels_apply(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (at::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()))) {
    return false;
  }
  if (x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat) return false;
  if (bias.defined() && (bias.scalar_type() != at::kFloat || bias.dim() != 1 || bias.size(0) != weight.size(0) ||
                         !bias.device().is_cpu())) {
    return false;
  }
  if (!x.device().is_cpu() || !weight.device().is_cpu() || weight.dim() != 2 || x.dim() < 1) return false;
  if (x.size(-1) != weight.size(1) || x.numel() == 0 || weight.numel() == 0) return false;
  // (The decoding-step kernel needs what the GEMM needs: an x86 build, AVX-512F, not `generic`.)
  return gemm_avx512_available();
}

at::Tensor with_input_shape(const at::Tensor& y, const at::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = y.size(1);
  return y.view(shape);
}

}  // namespace

bool decode_kernel_applies(const at::Tensor& x, const at::Tensor& weight) {
  return own_kernels_apply(x, weight, {}) && x.numel() / x.size(-1) <= kDecodeLinearMaxRows;
}

bool gemm_kernel_applies(const at::Tensor& x, const at::Tensor& weight) {
  return own_kernels_apply(x, weight, {}) && x.numel() / x.size(-1) > kDecodeLinearMaxRows;
}

at::Tensor fast_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, ScratchPool* scratch) {
  if (!own_kernels_apply(x, weight, bias)) return at::linear(x, weight, bias);
  const int64_t k = weight.size(1), n = weight.size(0);
  const int64_t m = x.numel() / k;
  const at::Tensor xc = x.reshape({m, k}).contiguous();
  const at::Tensor wc = weight.contiguous();
  if (m > kDecodeLinearMaxRows) {
    // Many rows (a prompt, a scoring pass): the cache-blocked GEMM, bias added in its first pass.
    // The output and the packed weight come from the model's scratch pool when it has one (warm
    // memory), else fresh (huge pages from 4 MiB up).
    at::Tensor y;
    if (scratch != nullptr) {
      y = scratch->empty(m, n);
    } else {
      auto buffer = allocate_floats(static_cast<size_t>(m * n));
      y = at::from_blob(buffer.get(), {m, n}, [](void* p) { std::free(p); }, x.options());
      buffer.release();  // the tensor's now
    }
    at::Tensor packed;
    if (scratch != nullptr) packed = scratch->empty(gemm_packed_floats(n, k), 1);
    const at::Tensor bc = bias.defined() ? bias.contiguous() : at::Tensor();
    gemm_nt_avx512(xc.const_data_ptr<float>(), m, k, wc.const_data_ptr<float>(), n,
                   bc.defined() ? bc.const_data_ptr<float>() : nullptr, y.mutable_data_ptr<float>(),
                   packed.defined() ? packed.mutable_data_ptr<float>() : nullptr);
    return with_input_shape(y, x);
  }
  at::Tensor y = at::empty({m, n}, x.options());
  const RowsFn fn = pick(static_cast<int>(m), std::make_integer_sequence<int, kDecodeLinearMaxRows>{});
  const float* xp = xc.const_data_ptr<float>();
  const float* wp = wc.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  // About 64 KiB of weights per task: enough work to be worth a thread, small enough to balance.
  const int64_t grain = std::max<int64_t>(16, (int64_t{1} << 14) / std::max<int64_t>(k, 1));
  at::parallel_for(0, n, grain, [&](int64_t r0, int64_t r1) { fn(xp, k, wp, r0, r1, yp, n); });
  if (bias.defined()) y.add_(bias);
  return with_input_shape(y, x);
}

}  // namespace aln::model
