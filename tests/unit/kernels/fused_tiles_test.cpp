// The CUDA vocabulary-tile kernels (kernels/cuda/fused_tiles.cu), in two ways:
// - here, without a GPU: the kernels' own arithmetic (kernels/fused_tile_math.h) replayed on the CPU in
//   their order (each of a block's lanes folds a strided slice, the block merges by a halving tree,
//   tiles fold into running row states), against float64 log-probs and their gradient;
// - on a GPU (skipped elsewhere): fused_token_logprobs on CUDA against float64 on the CPU, values and
//   gradients, float32 and bfloat16, on shapes that are multiples of nothing, one row, and 64k rows.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/model/device.h"
#include "kernels/fused_logprobs.h"
#include "kernels/fused_tile_math.h"
#include "kernels/token_logprobs.h"

namespace aln::kernels {
namespace {

const auto kIdentity = [](float x) { return x; };

// One tile's forward as the kernel computes it, for every row: `lanes` threads of a block (a power of 2).
void replay_tile_forward(const float* logits, int64_t n, int64_t vocab, int64_t start, int64_t size, float temperature,
                         const int64_t* targets, int lanes, float* running_max, float* running_sum, float* picked) {
  std::vector<LseState<float>> partial(lanes);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits + i * vocab + start;
    for (int lane = 0; lane < lanes; ++lane)
      partial[lane] = tile_lane_state(row, size, temperature, lane, lanes, kIdentity);
    for (int stride = lanes / 2; stride > 0; stride /= 2) {
      for (int lane = 0; lane < stride; ++lane) partial[lane] = lse_combine(partial[lane], partial[lane + stride]);
    }
    tile_row_finish(partial[0], row, size, temperature, targets[i], start, running_max + i, running_sum + i, picked + i,
                    kIdentity);
  }
}

TEST(FusedTileMath, KernelOrderReplayedOnTheCpuGivesTheLogprobsAndGradient) {
  const int64_t n = 6, vocab = 1009;  // a prime: no tile divides it
  at::manual_seed(21);
  const at::Tensor logits = at::randn({n, vocab}, at::kFloat) * 4;
  at::Tensor targets = at::randint(vocab, {n}, at::kLong);
  targets[0] = 0;
  targets[1] = vocab - 1;  // the first and last column, each in its edge tile
  const at::Tensor grad = at::randn({n}, at::kFloat);
  for (const float temperature : {1.0f, 0.7f}) {
    const at::Tensor scaled = logits.to(at::kDouble) / temperature;
    const at::Tensor want = token_logprobs(scaled, targets);
    std::vector<double> want_grad(n * vocab);
    const at::Tensor grad64 = grad.to(at::kDouble);
    token_logprobs_backward_reference<double>(scaled.const_data_ptr<double>(), targets.const_data_ptr<int64_t>(),
                                              grad64.const_data_ptr<double>(), n, vocab, want_grad.data());
    for (const int64_t tile : {vocab, int64_t{300}, int64_t{7}}) {
      for (const int lanes : {1, 32, 256}) {
        std::vector<float> running_max(n, -INFINITY), running_sum(n, 0.0f), picked(n, 0.0f);
        for (int64_t start = 0; start < vocab; start += tile) {
          replay_tile_forward(logits.const_data_ptr<float>(), n, vocab, start, std::min(tile, vocab - start),
                              temperature, targets.const_data_ptr<int64_t>(), lanes, running_max.data(),
                              running_sum.data(), picked.data());
        }
        const std::string what = "temperature " + std::to_string(temperature) + ", tile " + std::to_string(tile) +
                                 ", " + std::to_string(lanes) + " lanes";
        for (int64_t i = 0; i < n; ++i) {
          const float lse = running_max[i] + std::log(running_sum[i]);
          const double w = want[i].item<double>();
          ASSERT_NEAR(picked[i] - lse, w, 1e-5 * (1 + std::abs(w))) << what << ", row " << i;
          // The gradient of each logit, as the backward kernel writes it from this lse: tile by tile, each
          // tile's columns in blocks of `block` (the kernel's second grid dimension), each block's lanes.
          const float g = grad[i].item<float>();
          std::vector<float> row(logits.const_data_ptr<float>() + i * vocab,
                                 logits.const_data_ptr<float>() + (i + 1) * vocab);
          const int64_t block = 3 * lanes + 1;  // not a multiple of the lanes: a short last round
          for (int64_t start = 0; start < vocab; start += tile) {
            const int64_t size = std::min(tile, vocab - start);
            for (int64_t first = 0; first < size; first += block) {
              for (int lane = 0; lane < lanes; ++lane) {
                tile_grad_lane(row.data() + start, first, std::min(first + block, size), lane, lanes, temperature,
                               targets[i].item<int64_t>() - start, lse, g, kIdentity, kIdentity);
              }
            }
          }
          for (int64_t v = 0; v < vocab; ++v) {
            const double expected = want_grad[i * vocab + v] / temperature;
            ASSERT_NEAR(row[v], expected, 1e-5 * (1 + std::abs(g))) << what << ", row " << i << " column " << v;
          }
        }
      }
    }
  }
}

struct Grads {
  at::Tensor values, grad_hidden, grad_weight;
};

Grads fused_pass(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                 const at::Tensor& upstream, double temperature, int64_t tile) {
  at::Tensor h = hidden.detach().clone().requires_grad_(true);
  at::Tensor w = weight.detach().clone().requires_grad_(true);
  const at::Tensor lp = fused_token_logprobs(h, w, targets, temperature, tile);
  (lp * upstream).sum().backward();
  return {lp.detach().to(at::kDouble).cpu(), h.grad().to(at::kDouble).cpu(), w.grad().to(at::kDouble).cpu()};
}

double relative_gap(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).abs().max().item<double>() / (want.abs().max().item<double>() + 1e-30);
}

// The bfloat16 oracle: float64 from the same bfloat16 inputs, with each logit rounded to bfloat16 as the
// GEMM's output is (the rounding passed straight through in backward, as the kernels' gradient is taken
// with respect to the rounded logits).
Grads bf16_oracle(const at::Tensor& hb, const at::Tensor& wb, const at::Tensor& targets, const at::Tensor& upstream,
                  double temperature) {
  at::Tensor h = hb.to(at::kDouble).requires_grad_(true);
  at::Tensor w = wb.to(at::kDouble).requires_grad_(true);
  const at::Tensor exact = at::mm(h, w.t());
  const at::Tensor rounded = exact + (exact.to(at::kBFloat16).to(at::kDouble) - exact).detach();
  const at::Tensor lp = token_logprobs(rounded / temperature, targets);
  (lp * upstream.to(at::kDouble)).sum().backward();
  return {lp.detach(), h.grad(), w.grad()};
}

TEST(FusedLogprobsCuda, MatchesTheCpuInFloat32AndBfloat16) {
  absl::StatusOr<c10::Device> device = model::cuda_device_for(0);
  if (!device.ok()) GTEST_SKIP() << device.status().message();
  // An environment that forces TF32 matmuls (NGC containers set this) makes float32 GEMMs 10-bit ones.
  if (std::getenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") != nullptr) {
    GTEST_SKIP() << "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE is set: float32 GEMMs run in TF32; unset it to run this test";
  }
  struct Shape {
    int64_t rows, hidden, vocab, tile;
  };
  // Odd sizes everywhere; one row; 64k rows (64k blocks a launch); the default tile (0) and tiles that
  // split the vocabulary unevenly.
  for (const Shape s : {Shape{37, 48, 1009, 0}, Shape{37, 48, 1009, 300}, Shape{1, 64, 50257, 0},
                        Shape{65536, 32, 517, 0}, Shape{300, 96, 32003, 4999}}) {
    at::manual_seed(s.rows + s.vocab);
    const at::Tensor hidden = at::randn({s.rows, s.hidden}, at::kFloat);
    const at::Tensor weight = at::randn({s.vocab, s.hidden}, at::kFloat) * 0.3;
    const at::Tensor targets = at::randint(s.vocab, {s.rows}, at::kLong);
    const at::Tensor upstream = at::randn({s.rows}, at::kFloat);
    const std::string what = std::to_string(s.rows) + " x " + std::to_string(s.hidden) + " x " +
                             std::to_string(s.vocab) + ", tile " + std::to_string(s.tile);
    for (const double temperature : {1.0, 0.8}) {
      // float32: the CPU's float64 run is the oracle; both devices within float32's 1e-4.
      const Grads exact = fused_pass(hidden.to(at::kDouble), weight.to(at::kDouble), targets, upstream.to(at::kDouble),
                                     temperature, s.tile);
      const Grads f32 = fused_pass(hidden.to(*device), weight.to(*device), targets.to(*device), upstream.to(*device),
                                   temperature, s.tile);
      EXPECT_LE(relative_gap(f32.values, exact.values), 1e-4) << what;
      EXPECT_LE(relative_gap(f32.grad_hidden, exact.grad_hidden), 1e-4) << what;
      EXPECT_LE(relative_gap(f32.grad_weight, exact.grad_weight), 1e-4) << what;
      // bfloat16, values: against float64 on the same bfloat16 inputs. Each logit leaves its GEMM rounded
      // to bfloat16 (within an ulp, 2^-8 relative, allowing the float32 sum's order to tip the rounding),
      // so a log-prob (a logit minus a log-sum-exp, each off by at most the largest logit's rounding) is
      // off by at most 2^-7 of the largest |logit|.
      const at::Tensor hb = hidden.to(at::kBFloat16), wb = weight.to(at::kBFloat16);
      const Grads rounded =
          fused_pass(hb.to(at::kDouble), wb.to(at::kDouble), targets, upstream.to(at::kDouble), temperature, s.tile);
      const Grads b16 =
          fused_pass(hb.to(*device), wb.to(*device), targets.to(*device), upstream.to(*device), temperature, s.tile);
      const double largest_logit =
          at::mm(hb.to(at::kDouble), wb.to(at::kDouble).t()).abs().max().item<double>() / temperature;
      EXPECT_LE((b16.values - rounded.values).abs().max().item<double>(), std::ldexp(largest_logit, -7) + 1e-3) << what;
      // Gradients: the logits' rounding moves the softmax itself (by up to 2^-7 of the largest |logit|
      // relative, 0.1 at these shapes), far beyond what the kernels add, so the oracle takes the same
      // rounded logits; what is left is the bfloat16 gradient tile and each tile's product in bfloat16
      // (2^-9 each, summed in float32): 2^-6 of their scale leaves a wide margin.
      const Grads oracle = bf16_oracle(hb, wb, targets, upstream, temperature);
      EXPECT_LE(relative_gap(b16.grad_hidden, oracle.grad_hidden), std::ldexp(1.0, -6)) << what;
      EXPECT_LE(relative_gap(b16.grad_weight, oracle.grad_weight), std::ldexp(1.0, -6)) << what;
    }
  }
}

}  // namespace
}  // namespace aln::kernels
