#include "core/model/fast_linear.h"

#include "core/error.h"

#include "core/model/gemm_avx512.h"  // (defines ALN_X86_KERNELS)
#include "core/model/matrix_view.h"
#if ALN_X86_KERNELS
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
// Training's linear layer has a backward of its own: the autograd Function API lives outside ATen.
#include <torch/csrc/autograd/custom_function.h>

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
// (Whether autograd is involved is the caller's question.)
bool own_kernels_apply(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
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

bool wants_grad(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return at::GradMode::is_enabled() &&
         (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
}

// y = x W^T for x [m, k] contiguous, each of the three products by the GEMM or the BLAS as
// gemm_wins says for its shape. The weight is used through its strides (a transposed view costs no
// copy). A bias is added outside: an autograd Function cannot take an undefined tensor as an input.
// First derivatives only: the GEMM's products are not themselves recorded for autograd.
class TrainableLinear : public torch::autograd::Function<TrainableLinear> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight) {
    ctx->save_for_backward({x, weight});
    const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
    if (!gemm_wins(LinearProduct::kForward, m, k, n)) return at::mm(x, weight.t());
    at::Tensor y = at::empty({m, n}, x.options());
    gemm_avx512(matrix_of(x), transposed_of(weight), m, k, n, y.mutable_data_ptr<float>(), n);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    ALN_CHECK(!at::GradMode::is_enabled(),
              "fast_linear: a double backward (create_graph) through Aln's training GEMM is not supported");
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor gy = grads[0].contiguous();
    const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      if (gemm_wins(LinearProduct::kGradInput, m, k, n)) {
        dx = at::empty({m, k}, gy.options());
        gemm_avx512(matrix_of(gy), matrix_of(weight), m, n, k, dx.mutable_data_ptr<float>(), k);
      } else {
        dx = at::mm(gy, weight);
      }
    }
    if (ctx->needs_input_grad(1)) {
      if (gemm_wins(LinearProduct::kGradWeight, m, k, n)) {
        // dy^T read through its strides: the GEMM packs its rows as it goes.
        dw = at::empty({n, k}, gy.options());
        gemm_avx512(transposed_of(gy), matrix_of(x), n, m, k, dw.mutable_data_ptr<float>(), k);
      } else {
        dw = at::mm(gy.t(), x);
      }
    }
    return {dx, dw};
  }
};

at::Tensor with_input_shape(const at::Tensor& y, const at::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = y.size(1);
  return y.view(shape);
}

}  // namespace

bool decode_kernel_applies(const at::Tensor& x, const at::Tensor& weight) {
  return !wants_grad(x, weight, {}) && own_kernels_apply(x, weight, {}) &&
         x.numel() / x.size(-1) <= kDecodeLinearMaxRows && weight.is_contiguous();
}

bool gemm_kernel_applies(const at::Tensor& x, const at::Tensor& weight) {
  return !wants_grad(x, weight, {}) && own_kernels_apply(x, weight, {}) &&
         x.numel() / x.size(-1) > kDecodeLinearMaxRows;
}

at::Tensor fast_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, ScratchPool* scratch) {
  if (!own_kernels_apply(x, weight, bias)) return at::linear(x, weight, bias);
  const int64_t k = weight.size(1), n = weight.size(0);
  const int64_t m = x.numel() / k;
  if (wants_grad(x, weight, bias)) {
    // Training, above the decoding sizes: autograd's own layer (its forward always on the GEMM, the
    // backward products as gemm_wins says). The scratch pool is not used: the output and the saved
    // inputs outlive the call.
    if (m <= kDecodeLinearMaxRows) return at::linear(x, weight, bias);
    at::Tensor y = TrainableLinear::apply(x.reshape({m, k}).contiguous(), weight);
    if (bias.defined()) y = y + bias;
    return with_input_shape(y, x);
  }
  const at::Tensor xc = x.reshape({m, k}).contiguous();
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
    // The weight through its strides: a transposed view (GPT-2's Conv1D, stored [in, out]) costs no
    // copy, as the GEMM packs it a block at a time either way.
    const at::Tensor bc = bias.defined() ? bias.contiguous() : at::Tensor();
    gemm_avx512(matrix_of(xc), transposed_of(weight), m, k, n, y.mutable_data_ptr<float>(), n,
                bc.defined() ? bc.const_data_ptr<float>() : nullptr, false,
                packed.defined() ? packed.mutable_data_ptr<float>() : nullptr);
    return with_input_shape(y, x);
  }
  // The decoding kernel reads each output's weights as one row [in] in memory; a weight stored the
  // other way round would be copied whole on every decoding step, so those few rows go to the BLAS,
  // which reads it through its strides.
  if (!weight.is_contiguous()) return at::linear(x, weight, bias);
  const at::Tensor& wc = weight;
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
