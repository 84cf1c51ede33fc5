#include "core/model/tile_softmax.h"

#include "core/model/gemm_avx512.h"

#if ALN_X86_KERNELS
#include <immintrin.h>
#endif

#include <algorithm>
#include <limits>

#include <ATen/Parallel.h>

#include "core/error.h"

namespace aln::model {

#if ALN_X86_KERNELS
// GCC 12's _mm512_undefined_ps (the pass-through operand of max, roundscale and the reductions) reads
// a variable initialized from itself on purpose, and -Wuninitialized reports every inlined use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

constexpr int kLanes = 16;

// Rows per task: about 32 Ki floats of work, so a short tile still splits over the threads.
int64_t row_grain(int64_t size) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(size, 1)); }

// exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 with ln 2 split in two (the first part has
// few significant bits, so k times it is exact), |r| <= ln 2 / 2, exp(r) = 1 + r + r^2 P(r) with a
// degree-5 minimax P. x is clamped to [-110, 89] first: below, every result rounds to 0, above to inf
// (2^k overflows in scalef); min/max take the NaN operand's side, so NaN passes through.
__attribute__((target("avx512f"))) inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-110.0f), x));
  const __m512 k =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, k);
}

__attribute__((target("avx512f"))) inline float exp1(float x) { return _mm512_cvtss_f32(exp16(_mm512_set1_ps(x))); }

// The lanes [0, count) of a vector, count in (0, 16].
inline __mmask16 lanes(int64_t count) { return static_cast<__mmask16>((1u << count) - 1u); }

// x / T - m (the division only with a temperature).
template <bool kScaled>
__attribute__((target("avx512f"))) inline __m512 shifted(__m512 x, __m512 tv, __m512 mv) {
  return _mm512_sub_ps(kScaled ? _mm512_div_ps(x, tv) : x, mv);
}

// One row: its max (max(x / T) = max(x) / T: rounding a division is monotone), then the sum of
// exp(x / T - m) with the row still in L1. Two accumulators of each, in a fixed order.
template <bool kScaled>
__attribute__((target("avx512f"))) void lse_row(const float* row, int64_t size, float temperature, int64_t target,
                                                float& running_max, float& running_sum, float& picked) {
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 m0 = lowest, m1 = lowest;
  int64_t v = 0;
  for (; v + 2 * kLanes <= size; v += 2 * kLanes) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(row + v));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(row + v + kLanes));
  }
  for (; v < size; v += kLanes) {
    m0 = _mm512_max_ps(m0, _mm512_mask_loadu_ps(lowest, lanes(std::min<int64_t>(kLanes, size - v)), row + v));
  }
  float row_max = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
  if (kScaled) row_max /= temperature;
  const float m = std::max(running_max, row_max);
  const __m512 mv = _mm512_set1_ps(m), tv = _mm512_set1_ps(temperature);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  v = 0;
  for (; v + 2 * kLanes <= size; v += 2 * kLanes) {
    s0 = _mm512_add_ps(s0, exp16(shifted<kScaled>(_mm512_loadu_ps(row + v), tv, mv)));
    s1 = _mm512_add_ps(s1, exp16(shifted<kScaled>(_mm512_loadu_ps(row + v + kLanes), tv, mv)));
  }
  for (; v < size; v += kLanes) {
    const __mmask16 k = lanes(std::min<int64_t>(kLanes, size - v));
    s0 = _mm512_mask_add_ps(s0, k, s0, exp16(shifted<kScaled>(_mm512_maskz_loadu_ps(k, row + v), tv, mv)));
  }
  const float sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  running_sum = running_sum * exp1(running_max - m) + sum;
  running_max = m;
  if (target >= 0 && target < size) picked += kScaled ? row[target] / temperature : row[target];
}

template <bool kScaled>
__attribute__((target("avx512f"))) void grad_row(float* row, int64_t size, float temperature, int64_t target, float lse,
                                                 float grad) {
  const __m512 lv = _mm512_set1_ps(lse), neg = _mm512_set1_ps(-grad), gv = _mm512_set1_ps(grad);
  const __m512 tv = _mm512_set1_ps(temperature);
  for (int64_t v = 0; v < size; v += kLanes) {
    const int64_t count = std::min<int64_t>(kLanes, size - v);
    const __mmask16 k = lanes(count);
    __m512 x = _mm512_maskz_loadu_ps(k, row + v);
    if (kScaled) x = _mm512_div_ps(x, tv);
    __m512 y = _mm512_mul_ps(exp16(_mm512_sub_ps(x, lv)), neg);
    if (target >= v && target < v + count) y = _mm512_mask_add_ps(y, static_cast<__mmask16>(1u << (target - v)), y, gv);
    if (kScaled) y = _mm512_div_ps(y, tv);
    _mm512_mask_storeu_ps(row + v, k, y);
  }
}

__attribute__((target("avx512f"))) void exp_all(const float* x, int64_t count, float* out) {
  for (int64_t v = 0; v < count; v += kLanes) {
    const __mmask16 k = lanes(std::min<int64_t>(kLanes, count - v));
    _mm512_mask_storeu_ps(out + v, k, exp16(_mm512_maskz_loadu_ps(k, x + v)));
  }
}

}  // namespace

void tile_logsumexp(const float* logits, int64_t n, int64_t size, int64_t ld, float temperature, const int64_t* targets,
                    int64_t start, float* running_max, float* running_sum, float* picked) {
  ALN_CHECK(gemm_avx512_available(), "tile_logsumexp: AVX-512 kernels are not available here");
  const bool scaled = temperature != 1.0f;
  at::parallel_for(0, n, row_grain(size), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const int64_t target = targets[i] - start;
      (scaled ? lse_row<true> : lse_row<false>)(logits + i * ld, size, temperature, target, running_max[i],
                                                running_sum[i], picked[i]);
    }
  });
}

void tile_softmax_grad(float* logits, int64_t n, int64_t size, int64_t ld, float temperature, const int64_t* targets,
                       int64_t start, const float* lse, const float* grad) {
  ALN_CHECK(gemm_avx512_available(), "tile_softmax_grad: AVX-512 kernels are not available here");
  const bool scaled = temperature != 1.0f;
  at::parallel_for(0, n, row_grain(size), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      (scaled ? grad_row<true> : grad_row<false>)(logits + i * ld, size, temperature, targets[i] - start, lse[i],
                                                  grad[i]);
    }
  });
}

void exp_floats(const float* x, int64_t count, float* out) {
  ALN_CHECK(gemm_avx512_available(), "exp_floats: AVX-512 kernels are not available here");
  exp_all(x, count, out);
}

#else  // !ALN_X86_KERNELS

void tile_logsumexp(const float*, int64_t, int64_t, int64_t, float, const int64_t*, int64_t, float*, float*, float*) {
  ALN_FAIL("tile_logsumexp: this build does not target x86 (check gemm_avx512_available() first)");
}
void tile_softmax_grad(float*, int64_t, int64_t, int64_t, float, const int64_t*, int64_t, const float*, const float*) {
  ALN_FAIL("tile_softmax_grad: this build does not target x86 (check gemm_avx512_available() first)");
}
void exp_floats(const float*, int64_t, float*) {
  ALN_FAIL("exp_floats: this build does not target x86 (check gemm_avx512_available() first)");
}

#endif

}  // namespace aln::model
