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

// Depth of one pass (an A micro-panel of kRows x kDepth floats = 12 KiB stays in L1 while a
// kDepth x 32 panel of W (32 KiB) streams from L2); longer K accumulates pass after pass.
constexpr int64_t kDepth = 256;
// Depth of one round of tiles: a tile's B panels (kBlockDepth x kTileCols floats, 256 KiB) stay in
// L2 while its rows of A stream past. A weight gradient's depth is the token count (thousands):
// whole, a tile's panels would come from L3 for every row tile.
constexpr int64_t kBlockDepth = 2 * kDepth;

#if ALN_X86_KERNELS
namespace {

// Register tile: kRows rows of A times a panel of kCols = 32 columns of W^T (two zmm), i.e. 24
// accumulators, 2 panel loads and 1 broadcast live at once in the 32 zmm registers.
constexpr int kRows = 12;
// Cache tile handed to a thread: kTileRows rows of A (96 KiB at kDepth) against kTileCols columns.
constexpr int64_t kTileRows = 8 * kRows;
constexpr int64_t kTileCols = 4 * kCols;

// Rows [j0, j1) of B [k, n]'s panel p (32 columns) into `out` as [j1 - j0][32], the last panel padded
// with zeros, so the micro-kernel reads the 32 values it multiplies by one A element with two loads (on one cache line
// each when the scratch is 64-byte aligned, as allocate_floats makes it). Either of B's strides may
// be the unit one: W of a forward product is read down its rows, W of a backward product along them.
__attribute__((target("avx512f"))) void pack_panel(MatrixView b, int64_t n, int64_t j0, int64_t j1, int64_t p,
                                                   float* out) {
  const int64_t c0 = p * kCols, cols = std::min<int64_t>(kCols, n - c0);
  for (int64_t j = j0; j < j1; ++j) {
    float* dst = out + (j - j0) * kCols;
    const float* src = b.data + j * b.row + c0 * b.col;
    if (b.col == 1) {
      std::copy(src, src + cols, dst);
    } else {
      for (int64_t c = 0; c < cols; ++c) dst[c] = src[c * b.col];
    }
    std::fill(dst + cols, dst + kCols, 0.0f);
  }
}

// Rows [r0, r1) and columns [d0, d0 + depth) of A into `out` as blocks of kRows rows, each
// [depth][kRows] (A's kRows values for one j side by side), for the micro-kernel's kColumns layout.
// The transposed dy of a weight gradient has its rows a row of dy (n floats) apart: read in place,
// the 256 rows one pass touches fall into a few L1 sets whenever n is a multiple of 512 and miss.
// Packed, one pass reads them in order, and each copy is one masked vector per row of dy.
__attribute__((target("avx512f"))) void pack_rows(MatrixView a, int64_t r0, int64_t r1, int64_t d0, int64_t depth,
                                                  float* out) {
  for (int64_t r = r0; r < r1; r += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, r1 - r);
    float* block = out + (r - r0) * depth;
    if (a.row == 1) {
      const auto mask = static_cast<__mmask16>((1u << rows) - 1u);
      for (int64_t j = 0; j < depth; ++j) {
        _mm512_mask_storeu_ps(block + j * kRows, mask, _mm512_maskz_loadu_ps(mask, a.data + r + (d0 + j) * a.col));
      }
    } else {
      for (int64_t j = 0; j < depth; ++j) {
        for (int64_t i = 0; i < rows; ++i) block[j * kRows + i] = a.data[(r + i) * a.row + (d0 + j) * a.col];
      }
    }
  }
}

// c[R, 32 (masked)] (=|+=) a[R, depth] x panel[depth, 32]. First pass: c = acc (+ bias); later
// passes add acc to c, so the order of additions is fixed by K alone. A's element (i, j) is
// a[i * lda + j] (rows in place), or with kColumns a[j * lda + i] (a block packed by pack_rows).
template <int R, bool kColumns>
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
      const __m512 av = _mm512_set1_ps(kColumns ? a[j * lda + i] : a[i * lda + j]);
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

template <bool kColumns, int... Rs>
MicroFn pick(int r, std::integer_sequence<int, Rs...>) {
  MicroFn fn = nullptr;
  ((fn = (r == Rs + 1 ? &micro<Rs + 1, kColumns> : fn)), ...);
  return fn;
}

MicroFn pick_micro(int rows, bool columns) {
  if (rows == kRows) return columns ? &micro<kRows, true> : &micro<kRows, false>;
  return columns ? pick<true>(rows, std::make_integer_sequence<int, kRows>{})
                 : pick<false>(rows, std::make_integer_sequence<int, kRows>{});
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

// From bench_linear's BM_Train (2 threads, the layer shapes of bench/dpo_step.py at hidden 64, 256
// and 512 and the fused log-prob kernel's vocabulary tile, 512 and 2,048 rows; four runs, each the
// median of 3-5 repetitions; this shared machine moves single results by +-30%):
//  - forward: the GEMM wins nearly everywhere, 1.1-1.5x;
//  - dx: even on average at 512 rows (0.7-1.3x), ahead (1.1-1.6x) only with 2,048 rows and both
//    dimensions >= 256; with the whole GPT-2 vocabulary as the depth (512 x 50,257 x 512) 0.6x;
//  - dW: behind wherever the output [n, k] is small (a tile or two, so one thread does the work over
//    the whole depth: 0.25-0.7x), 0.9-1.65x (mostly 1.1-1.3x) where the output is >= 512 x 256 and the
//    depth (m) moderate, about even at 2,048 rows.
bool gemm_wins(LinearProduct product, int64_t m, int64_t k, int64_t n) {
  if (!gemm_avx512_available() || m <= 16 || k == 0 || n == 0) return false;
  switch (product) {
    case LinearProduct::kForward:
      return true;
    case LinearProduct::kGradInput:
      return m >= 1024 && k >= 256 && n >= 256;
    case LinearProduct::kGradWeight:
      return m <= 1024 && n * k >= 512 * 256;
  }
  return false;
}

// Panels of B packed at once: one block of columns over one round's depth (4,096 x 512 floats,
// 8 MiB). Packing all of B up front took a copy of the whole weight, 103 MB for an output projection
// of the GPT-2 vocabulary at hidden 512, twice a training step (forward, dx), and those copies set
// the step's peak memory.
constexpr int64_t kPackPanels = 128;

int64_t gemm_packed_floats(int64_t n, int64_t k) {
  return std::min((n + kCols - 1) / kCols, kPackPanels) * kCols * std::min(k, kBlockDepth);
}

#if !ALN_X86_KERNELS
void gemm_avx512(MatrixView, MatrixView, int64_t, int64_t, int64_t, float*, int64_t, const float*, bool, float*) {
  ALN_FAIL("gemm_avx512: this build does not target x86 (check gemm_avx512_available() first)");
}
#else
void gemm_avx512(MatrixView a, MatrixView b, int64_t m, int64_t k, int64_t n, float* c, int64_t ldc, const float* bias,
                 bool accumulate, float* packed) {
  ALN_CHECK(!(accumulate && bias != nullptr), "gemm_avx512: a bias is added only when c is written, not accumulated");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // An empty sum: c is the bias (or zero), or stays as it is.
    if (!accumulate) {
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias != nullptr ? bias[j] : 0.0f;
      }
    }
    return;
  }
  static_assert(kPackPanels * kCols % kTileCols == 0, "a tile's panels lie in one packed block");
  const int64_t panels = (n + kCols - 1) / kCols;
  std::unique_ptr<float, FreeDeleter> own;
  if (packed == nullptr) own = allocate_floats(static_cast<size_t>(gemm_packed_floats(n, k)));
  float* wp = packed != nullptr ? packed : own.get();
  // A is read in place when its rows are contiguous (x, dy), else packed a tile at a time (dy^T).
  const bool pack_a = a.col != 1;
  const int64_t row_tiles = (m + kTileRows - 1) / kTileRows;
  // Blocks of kPackPanels panels, each in rounds over the depth, one after another: B is packed a
  // block's round at a time, and each element still sums its passes in order of k.
  for (int64_t q0 = 0; q0 < panels; q0 += kPackPanels) {
    const int64_t q1 = std::min(panels, q0 + kPackPanels);
    const int64_t col_tiles = ((q1 - q0) * kCols + kTileCols - 1) / kTileCols;
    for (int64_t b0 = 0; b0 < k; b0 += kBlockDepth) {
      const int64_t b1 = std::min(k, b0 + kBlockDepth), round = b1 - b0;
      at::parallel_for(q0, q1, 8, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) pack_panel(b, n, b0, b1, p, wp + (p - q0) * round * kCols);
      });
      // Tiles column by column: a tile's B panels (256 KiB a round) stay in L2 while A's rows, read
      // again for every column of tiles, come from L2/L3; the other order would stream all of a large
      // W (32 MiB of output projection) from memory once per 96 rows. Threads take the next tile as
      // they finish one (an even static split leaves one core waiting whenever the other is
      // interrupted); which thread computes a tile does not change its result.
      const int64_t tiles = row_tiles * col_tiles;
      std::atomic<int64_t> next{0};
      at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
        std::unique_ptr<float, FreeDeleter> a_tile;
        if (pack_a) a_tile = allocate_floats(static_cast<size_t>(kTileRows * kDepth));
        for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < tiles;
             t = next.fetch_add(1, std::memory_order_relaxed)) {
          const int64_t r0 = t % row_tiles * kTileRows, r1 = std::min(m, r0 + kTileRows);
          const int64_t p0 = q0 + t / row_tiles * (kTileCols / kCols), p1 = std::min(q1, p0 + kTileCols / kCols);
          for (int64_t d0 = b0; d0 < b1; d0 += kDepth) {
            const int64_t depth = std::min(kDepth, b1 - d0);
            if (pack_a) pack_rows(a, r0, r1, d0, depth, a_tile.get());
            const int64_t lda = pack_a ? kRows : a.row;
            for (int64_t p = p0; p < p1; ++p) {
              const int64_t cols = std::min<int64_t>(kCols, n - p * kCols);
              const auto m0 = static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1u << cols) - 1u);
              const auto m1 = static_cast<__mmask16>(cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (1u << (cols - 16)) - 1u);
              const float* panel = wp + (p - q0) * round * kCols + (d0 - b0) * kCols;
              const float* bp = bias != nullptr ? bias + p * kCols : nullptr;
              for (int64_t r = r0; r < r1; r += kRows) {
                const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
                const MicroFn fn = pick_micro(rows, pack_a);
                const float* ar = pack_a ? a_tile.get() + (r - r0) * depth : a.data + r * a.row + d0;
                fn(ar, lda, panel, depth, c + r * ldc + p * kCols, ldc, m0, m1, d0 == 0 && !accumulate, bp);
              }
            }
          }
        }
      });
    }
  }
}

#endif  // ALN_X86_KERNELS

void gemm_nt_avx512(const float* a, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* c,
                    float* packed) {
  gemm_avx512({a, k, 1}, {w, 1, k}, m, k, n, c, n, bias, false, packed);
}

}  // namespace aln::model
