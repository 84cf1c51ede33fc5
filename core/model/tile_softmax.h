#pragma once
// The elementwise half of the fused output projection + log-softmax (kernels/fused_logprobs.*), one
// sweep per row of a vocabulary tile of logits. Written with ATen ops, a tile's forward is five passes
// over its [N, tile] logits (max, subtract into a new tensor, exp, sum, gather) and its backward three
// (subtract, exp, scale); the tile (8 MiB) is larger than L2, so each pass went to L3 or memory, and
// at hidden 64 they took as long as the tile's products. Here each row (a few KiB) is read from memory
// once and stays in L1 for its second look. Same conditions as the GEMM (gemm_avx512_available()).
//
// Each row's sums run in one fixed order on one thread, so results do not depend on the thread count.
// exp is a polynomial (Cody-Waite range reduction, then 1 + r + r^2 P(r) with a degree-5 minimax P), within 1.5 ulp of
// the exact value over the float range (1.22 measured); exp(-inf) = 0, exp(+inf) = inf and NaN stays NaN.
#include <cstdint>

namespace aln::model {

// logits: n rows of `size` floats, row stride ld (the tile [start, start + size) of a vocabulary).
// For each row i, with x = logits[i] / temperature:
//   m = max(running_max[i], max(x)), running_sum[i] = running_sum[i] exp(running_max[i] - m) + sum exp(x - m),
//   running_max[i] = m, and picked[i] += x[targets[i] - start] when the target falls in the tile.
// logits are only read. Requires gemm_avx512_available().
void tile_logsumexp(const float* logits, int64_t n, int64_t size, int64_t ld, float temperature, const int64_t* targets,
                    int64_t start, float* running_max, float* running_sum, float* picked);

// In place, the gradient of picked - logsumexp w.r.t. the tile's logits times grad[i]:
//   logits[i][v] <- (exp(x_v - lse[i]) (-grad[i]) + grad[i] 1[v = targets[i] - start]) / temperature,
// x = logits[i] / temperature, in that order of operations. Requires gemm_avx512_available().
void tile_softmax_grad(float* logits, int64_t n, int64_t size, int64_t ld, float temperature, const int64_t* targets,
                       int64_t start, const float* lse, const float* grad);

// exp of each of `count` floats into `out` (may alias `x`), with the kernels' polynomial: for tests.
void exp_floats(const float* x, int64_t count, float* out);

}  // namespace aln::model
