#pragma once
// C = A B (+ bias) in float32 with AVX-512, for the linear layers' products (many rows): the forward
// product x W^T and, in training, both backward products (dy W and dy^T x). The BLAS LibTorch ships
// takes its AVX2 ("zen") path on AMD CPUs; this kernel uses the 512-bit FMAs with a 12 x 32 register
// tile over B packed in 32-column panels, tiles handed to threads as they free up. A and B are read
// through their strides, so transposed operands cost a packing pass, not a copy. On this project's 2-core AMD EPYC it
// runs the tiny Llama's layer shapes at 165-185 GFLOP/s against the BLAS's 110-155 (bench/linear_bench.cpp). Each
// output element is the same sequence of float32 FMAs whatever the thread count or split, so results are reproducible.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

// The kernels exist only in x86 builds; elsewhere (aarch64: GH200 nodes) the model's linear layers
// are LibTorch's at::linear and gemm_avx512_available() is false.
#if defined(__x86_64__) || defined(_M_X64)
#define ALN_X86_KERNELS 1
#else
#define ALN_X86_KERNELS 0
#endif

namespace aln::model {

// Whether this process runs the kernel: an x86 build, a CPU with AVX-512F (checked at run time)
// and ALN_CPU_KERNELS not set to `generic`.
bool gemm_avx512_available();

// A strided float matrix: element (i, j) is data[i * row + j * col].
struct MatrixView {
  const float* data;
  int64_t row, col;
};

// c [m, n] (row stride ldc) = a [m, k] b [k, n] (+ bias [n]), or, with `accumulate`, c += a b (no
// bias then). `packed`: gemm_packed_floats(n, k) floats of 64-byte aligned scratch, or null to
// allocate them. Each element of c is the same sequence of float32 FMAs (in order of k, in passes of
// 256) whatever the strides, thread count or split. Threads: LibTorch's intra-op pool. Requires
// gemm_avx512_available().
void gemm_avx512(MatrixView a, MatrixView b, int64_t m, int64_t k, int64_t n, float* c, int64_t ldc,
                 const float* bias = nullptr, bool accumulate = false, float* packed = nullptr);

// The three products of a linear layer y = x W^T with x [m, k] and W [n, k] in training.
enum class LinearProduct {
  kForward,     // y = x W^T: [m, k] x [k, n]
  kGradInput,   // dx = dy W: [m, n] x [n, k]
  kGradWeight,  // dW = dy^T x: [n, m] x [m, k]
};
// Whether gemm_avx512 beats LibTorch's BLAS on this product of a layer with x [m, k] and W [n, k]
// (measured on this project's 2-core AMD EPYC by bench_linear's BM_Train cases); false where the
// kernel is not available. A function of the shape alone, so a run's choice (and its bits) does not
// depend on the thread count.
bool gemm_wins(LinearProduct product, int64_t m, int64_t k, int64_t n);

// a: [m, k] row-major, w: [n, k] row-major, bias: [n] or null, c: [m, n] row-major (written, not
// read). `packed`: gemm_packed_floats(n, k) floats of scratch, 64-byte aligned, or null to allocate
// them. Threads: LibTorch's intra-op pool. Requires gemm_avx512_available().
void gemm_nt_avx512(const float* a, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* c,
                    float* packed = nullptr);
// The scratch gemm_avx512 packs B into, a block of columns over a round of the depth at a time: n
// rounded up to 32 (at most 4,096) times k (at most 512).
int64_t gemm_packed_floats(int64_t n, int64_t k);

// `count` floats, 64-byte aligned; from 4 MiB up, 2 MiB aligned and advised to be backed by huge
// pages (madvise MADV_HUGEPAGE, where the kernel allows it). A fresh buffer's first touch costs a
// page fault per page: for the 256 MiB of logits of a 2048-token pass, ~65000 faults of 4 KiB (about
// a fifth of the pass here) become ~130 of 2 MiB. Never null: throws when memory is short.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
std::unique_ptr<float, FreeDeleter> allocate_floats(size_t count);

}  // namespace aln::model
