#pragma once
// Token log-probabilities straight from the last hidden states and the output projection, without
// ever holding the [N, V] logits: log p(t_i | h_i) = (h_i · W[t_i]) / T − logsumexp_v((h_i · W[v]) / T).
// The vocabulary is processed in tiles of [N, tile] logits (about 8 MiB; 128 MiB on a GPU), with an online
// log-sum-exp; the backward pass recomputes each tile's logits from the saved log-sum-exp, adds the
// tile's share of the hidden states' gradient and writes the tile's rows of W's gradient. W and its
// gradient are touched once per pass; the hidden states, small beside them, are reused by every
// tile. For a GPT-2-sized vocabulary that turns the largest activation of training (logits and
// their gradient, N × 50,257 floats each) into one tile of a few MB, at the price of one more GEMM
// in backward. Nothing is read on the host. On CUDA the same function runs its tiles' elementwise work
// in Aln's kernels (kernels/cuda/fused_tiles.cu), on the logits in the training dtype.
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace aln::kernels {

// hidden [N, H] and weight [V, H] (same floating dtype and device), targets [N] (int64 in [0, V)).
// Returns [N] in float32 for half-precision inputs, else their dtype (reductions in float32 at
// least: a response's sum of bfloat16 log-probs would keep 3 digits); differentiable with
// respect to hidden and weight. `tile` (vocabulary columns per tile) 0 picks about 8 MiB of logits.
// `keep_logits`: one tile of all N x V logits, kept from the forward pass to the backward pass (which
// turns them into their gradient in place) instead of recomputed: the plain projection's products
// without its log-softmax passes, for where the logits are small and the recompute is what costs.
// Without autograd still one tile, nothing kept.
at::Tensor fused_token_logprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                double temperature = 1.0, int64_t tile = 0, bool keep_logits = false);

// The columns per tile `tile` 0 stands for, for `rows` hidden states on `device` (at least 1): about
// 8 MiB of float32 logits on the CPU (a cache-sized tile), 128 MiB on a GPU (GEMMs wide enough).
int64_t fused_logprobs_tile(int64_t rows, const c10::Device& device = c10::Device(c10::kCPU));

// Whether tiles recomputed in backward are the choice for `rows` hidden states and a `vocab`-row
// projection on `device` (true), or all the logits kept (keep_logits). Keeping saves the recompute (a
// fourth product) and is faster at every shape measured on the CPU (bench/token_logprobs_bench.cpp,
// 2 threads, GPT-2 vocabulary: 0.8x the tiles' time at 512 x 64 and 512 x 512, 0.75x at 2,048 x 512;
// bench/dpo_step.py at hidden 64: +7-15% tokens/s for +170 MB), but costs memory in proportion to the
// rows. So on the CPU the logits are kept up to 128 MiB of them (512 rows of the GPT-2 vocabulary)
// and tiled beyond; on every other device, where memory is what limits the batch, tiled. The
// hidden size does not enter the choice (kept was faster at hidden 64 to 512 alike).
bool fused_logprobs_preferred(int64_t rows, int64_t vocab, const c10::Device& device);

}  // namespace aln::kernels
