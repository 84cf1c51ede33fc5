#include "core/model/gemm_avx512.h"

#if ALN_X86_KERNELS
#include <immintrin.h>
#endif
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

#include <ATen/Parallel.h>

#include "core/env.h"
#include "core/error.h"

namespace aln::model {

// Columns of a packed W panel (two zmm registers of floats).
constexpr int kCols = 32;

#if ALN_X86_KERNELS
namespace {

// Register tile: kRows rows of A times a panel of kCols = 32 columns of W^T (two zmm), i.e. 24
// accumulators, 2 panel loads and 1 broadcast live at once in the 32 zmm registers.
constexpr int kRows = 12;
// Depth of one pass (an A micro-panel of kRows x kDepth floats = 12 KiB stays in L1 while a
// kDepth x 32 panel of W (32 KiB) streams from L2); longer K accumulates pass after pass.
constexpr int64_t kDepth = 256;
// Cache tile handed to a thread: kTileRows rows of A (96 KiB at kDepth) against kTileCols columns.
constexpr int64_t kTileRows = 8 * kRows;
constexpr int64_t kTileCols = 4 * kCols;

// W [n, k] into panels of 32 columns, [n / 32][k][32], the last one padded with zeros, so the
// micro-kernel reads the 32 values it multiplies by one A element with two loads (on one cache line
// each when the scratch is 64-byte aligned, as allocate_floats makes it).
__attribute__((target("avx512f"))) void pack_panel(const float* w, int64_t n, int64_t k, int64_t p, float* out) {
  const int64_t c0 = p * kCols, cols = std::min<int64_t>(kCols, n - c0);
  for (int64_t j = 0; j < k; ++j) {
    float* dst = out + j * kCols;
    for (int64_t c = 0; c < cols; ++c) dst[c] = w[(c0 + c) * k + j];
    for (int64_t c = cols; c < kCols; ++c) dst[c] = 0.0f;
  }
}

// c[R, 32 (masked)] (=|+=) a[R, depth] x panel[depth, 32]. First pass: c = acc (+ bias); later
// passes add acc to c, so the order of additions is fixed by K alone.
template <int R>
__attribute__((target("avx512f"))) void micro(const float* a, int64_t lda, const float* panel, int64_t depth, float* c,
                                              int64_t ldc, __mmask16 m0, __mmask16 m1, bool first, const float* bias) {
  __m512 lo[R], hi[R];
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm512_setzero_ps();
  for (int64_t j = 0; j < depth; ++j) {
    const __m512 b0 = _mm512_loadu_ps(panel + j * kCols);
    const __m512 b1 = _mm512_loadu_ps(panel + j * kCols + 16);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * lda + j]);
      lo[i] = _mm512_fmadd_ps(av, b0, lo[i]);
      hi[i] = _mm512_fmadd_ps(av, b1, hi[i]);
    }
  }
  __m512 add0 = _mm512_setzero_ps(), add1 = _mm512_setzero_ps();
  if (first && bias != nullptr) {
    add0 = _mm512_maskz_loadu_ps(m0, bias);
    add1 = _mm512_maskz_loadu_ps(m1, bias + 16);
  }
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) {
    float* ci = c + i * ldc;
    if (first) {
      _mm512_mask_storeu_ps(ci, m0, _mm512_add_ps(lo[i], add0));
      _mm512_mask_storeu_ps(ci + 16, m1, _mm512_add_ps(hi[i], add1));
    } else {
      _mm512_mask_storeu_ps(ci, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, ci), lo[i]));
      _mm512_mask_storeu_ps(ci + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, ci + 16), hi[i]));
    }
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, __mmask16, __mmask16, bool,
                         const float*);

template <int... Rs>
MicroFn pick(int r, std::integer_sequence<int, Rs...>) {
  MicroFn fn = nullptr;
  ((fn = (r == Rs + 1 ? &micro<Rs + 1> : fn)), ...);
  return fn;
}

}  // namespace
#endif  // ALN_X86_KERNELS

std::unique_ptr<float, FreeDeleter> allocate_floats(size_t count) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = std::max<size_t>(count * sizeof(float), 64);
  const size_t align = bytes >= 2 * kHuge ? kHuge : 64;
  void* p = std::aligned_alloc(align, (bytes + align - 1) / align * align);
  ALN_CHECK(p != nullptr, "cannot allocate ", bytes, " bytes for a linear layer");
  // Advice only: where transparent huge pages are off it changes nothing.
  if (align == kHuge) madvise(p, (bytes + align - 1) / align * align, MADV_HUGEPAGE);
  return std::unique_ptr<float, FreeDeleter>(static_cast<float*>(p));
}

bool gemm_avx512_available() {
#if ALN_X86_KERNELS
  // A fact about the machine, read once (the CPU does not change under a running process).
  static const bool yes = __builtin_cpu_supports("avx512f") != 0 && cpu_kernels() != CpuKernels::kGeneric;
  return yes;
#else
  return false;
#endif
}

int64_t gemm_packed_floats(int64_t n, int64_t k) { return (n + kCols - 1) / kCols * kCols * k; }

#if !ALN_X86_KERNELS
void gemm_nt_avx512(const float*, int64_t, int64_t, const float*, int64_t, const float*, float*, float*) {
  ALN_FAIL("gemm_nt_avx512: this build does not target x86 (check gemm_avx512_available() first)");
}
#else
void gemm_nt_avx512(const float* a, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* c,
                    float* packed) {
  const int64_t panels = (n + kCols - 1) / kCols;
  std::unique_ptr<float, FreeDeleter> own;
  if (packed == nullptr) own = allocate_floats(static_cast<size_t>(gemm_packed_floats(n, k)));
  float* wp = packed != nullptr ? packed : own.get();
  at::parallel_for(0, panels, 8, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) pack_panel(w, n, k, p, wp + p * k * kCols);
  });
  const int64_t row_tiles = (m + kTileRows - 1) / kTileRows;
  const int64_t col_tiles = (n + kTileCols - 1) / kTileCols;
  // Tiles column by column: a tile's W panels (128 KiB) stay in L2 while A's rows, read again for
  // every column of tiles, come from L2/L3; the other order would stream all of a large W (32 MiB of
  // output projection) from memory once per 96 rows. Threads take the next tile as they finish one
  // (an even static split leaves one core waiting whenever the other is interrupted); which thread
  // computes a tile does not change its result.
  const int64_t tiles = row_tiles * col_tiles;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < tiles;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t r0 = t % row_tiles * kTileRows, r1 = std::min(m, r0 + kTileRows);
      const int64_t p0 = t / row_tiles * (kTileCols / kCols), p1 = std::min(panels, p0 + kTileCols / kCols);
      for (int64_t d0 = 0; d0 < k; d0 += kDepth) {
        const int64_t depth = std::min(kDepth, k - d0);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t cols = std::min<int64_t>(kCols, n - p * kCols);
          const auto m0 = static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1u << cols) - 1u);
          const auto m1 = static_cast<__mmask16>(cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (1u << (cols - 16)) - 1u);
          const float* panel = wp + p * k * kCols + d0 * kCols;
          const float* bp = bias != nullptr ? bias + p * kCols : nullptr;
          for (int64_t r = r0; r < r1; r += kRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
            const MicroFn fn = rows == kRows ? &micro<kRows> : pick(rows, std::make_integer_sequence<int, kRows>{});
            fn(a + r * k + d0, k, panel, depth, c + r * n + p * kCols, n, m0, m1, d0 == 0, bp);
          }
        }
      }
    }
  });
}

#endif  // ALN_X86_KERNELS

}  // namespace aln::model
