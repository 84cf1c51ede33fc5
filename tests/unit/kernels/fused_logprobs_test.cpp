// The fused, chunked output projection + log-softmax against the plain composite (full logits, then
// token_logprobs): values and the gradients of the hidden states and of the projection, at every
// tiling of the vocabulary, with and without a temperature, in float64 (tight) and float32 (its tolerance).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/model/gemm_avx512.h"
#include "kernels/fused_logprobs.h"
#include "kernels/token_logprobs.h"

namespace aln::kernels {
namespace {

struct Case {
  at::Tensor hidden, weight, targets, upstream;
};

Case make_case(int64_t n, int64_t h, int64_t v, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  Case c;
  c.hidden = at::randn({n, h}, at::TensorOptions().dtype(dtype));
  c.weight = at::randn({v, h}, at::TensorOptions().dtype(dtype)) * 0.5;
  c.targets = at::randint(v, {n}, at::kLong);
  c.upstream = at::randn({n}, at::TensorOptions().dtype(dtype));  // an arbitrary per-token weighting
  return c;
}

struct Result {
  at::Tensor values, grad_hidden, grad_weight;
};

Result run(const Case& c, double temperature, int64_t tile, bool fused, bool keep = false) {
  at::Tensor h = c.hidden.clone().requires_grad_(true);
  at::Tensor w = c.weight.clone().requires_grad_(true);
  at::Tensor lp = fused ? fused_token_logprobs(h, w, c.targets, temperature, tile, keep)
                        : token_logprobs(at::mm(h, w.t()) / temperature, c.targets);
  (lp * c.upstream).sum().backward();
  return {lp.detach(), h.grad(), w.grad()};
}

void expect_close(const at::Tensor& got, const at::Tensor& want, double tol, const std::string& what) {
  const double scale = want.abs().max().item<double>() + 1e-30;
  EXPECT_LE((got - want).abs().max().item<double>(), tol * scale) << what;
}

// The fused kernel on a float32 case against the full-logits path on the same numbers in float64.
Result expect_float32_within_tolerance(const Case& c, double temperature, int64_t tile, bool keep) {
  Case exact = c;
  exact.hidden = c.hidden.to(at::kDouble);
  exact.weight = c.weight.to(at::kDouble);
  exact.upstream = c.upstream.to(at::kDouble);
  const Result want = run(exact, temperature, 0, /*fused=*/false);
  const Result got = run(c, temperature, tile, /*fused=*/true, keep);
  expect_close(got.values.to(at::kDouble), want.values, 1e-5, "float32 values");
  expect_close(got.grad_hidden.to(at::kDouble), want.grad_hidden, 1e-5, "float32 d hidden");
  expect_close(got.grad_weight.to(at::kDouble), want.grad_weight, 1e-5, "float32 d weight");
  return got;
}

TEST(FusedLogprobs, EqualsTheFullLogitsPathAtEveryTiling) {
  const Case c = make_case(13, 8, 37, at::kDouble, 3);
  for (double temperature : {1.0, 0.7}) {
    const Result want = run(c, temperature, 0, /*fused=*/false);
    for (int64_t tile : {1, 4, 13, 36, 37, 100, 0}) {
      const Result got = run(c, temperature, tile, /*fused=*/true);
      const std::string what = "tile " + std::to_string(tile) + " temperature " + std::to_string(temperature);
      expect_close(got.values, want.values, 1e-12, "values, " + what);
      expect_close(got.grad_hidden, want.grad_hidden, 1e-12, "d hidden, " + what);
      expect_close(got.grad_weight, want.grad_weight, 1e-12, "d weight, " + what);
    }
  }
}

TEST(FusedLogprobs, Float32WithinItsTolerance) {
  const Case c = make_case(64, 32, 501, at::kFloat, 5);
  const Result want = run(c, 1.0, 0, false);
  const Result got = run(c, 1.0, 7, true);
  expect_close(got.values, want.values, 1e-5, "values");
  expect_close(got.grad_hidden, want.grad_hidden, 1e-5, "d hidden");
  expect_close(got.grad_weight, want.grad_weight, 1e-5, "d weight");
}

// Shapes where the float32 CPU tiles' three products go through Aln's GEMM (core/model/gemm_avx512.h:
// 1,024 rows, hidden 256, tiles of 600; the last tile of 300 takes the BLAS for its weight
// gradient), against the float64 full-logits path. (Without AVX-512 the same shapes take the BLAS.)
TEST(FusedLogprobs, Float32OnTheGemmWithinItsTolerance) {
  EXPECT_EQ(model::gemm_wins(model::LinearProduct::kGradInput, 1024, 256, 600), model::gemm_avx512_available());
  EXPECT_EQ(model::gemm_wins(model::LinearProduct::kGradWeight, 1024, 256, 600), model::gemm_avx512_available());
  expect_float32_within_tolerance(make_case(1024, 256, 1500, at::kFloat, 6), 0.9, 600, /*keep=*/false);
}

// All the logits in one tile, kept for the backward pass instead of recomputed: the same values and
// gradients, in float64 (tight) and float32 against float64 (with a temperature, on the row sweeps
// where AVX-512 is there); a second backward through the same graph recomputes what the first used up.
TEST(FusedLogprobs, KeptLogitsEqualTheFullLogitsPath) {
  const Case c = make_case(13, 8, 37, at::kDouble, 3);
  for (double temperature : {1.0, 0.7}) {
    const Result want = run(c, temperature, 0, /*fused=*/false);
    const Result got = run(c, temperature, 0, /*fused=*/true, /*keep=*/true);
    expect_close(got.values, want.values, 1e-12, "values");
    expect_close(got.grad_hidden, want.grad_hidden, 1e-12, "d hidden");
    expect_close(got.grad_weight, want.grad_weight, 1e-12, "d weight");
  }
  const Case f = make_case(96, 48, 1001, at::kFloat, 4);
  const Result got = expect_float32_within_tolerance(f, 0.8, 0, /*keep=*/true);

  at::Tensor h = f.hidden.clone().requires_grad_(true);
  const at::Tensor loss = (fused_token_logprobs(h, f.weight, f.targets, 0.8, 0, true) * f.upstream).sum();
  const at::Tensor first = torch::autograd::grad({loss}, {h}, {}, /*retain_graph=*/true)[0];
  const at::Tensor second = torch::autograd::grad({loss}, {h})[0];
  EXPECT_TRUE(at::equal(first, second));
  at::NoGradGuard no_grad;  // nothing to keep for
  EXPECT_TRUE(at::equal(fused_token_logprobs(f.hidden, f.weight, f.targets, 0.8, 0, true), got.values));
}

// A frozen projection (a reference's head) gets no gradient, and the hidden states get the same one.
TEST(FusedLogprobs, FrozenProjectionGetsNoGradient) {
  const Case c = make_case(5, 4, 11, at::kDouble, 9);
  at::Tensor h = c.hidden.clone().requires_grad_(true);
  fused_token_logprobs(h, c.weight, c.targets, 1.0, 2).sum().backward();
  EXPECT_FALSE(c.weight.grad().defined());
  at::Tensor plain = c.hidden.clone().requires_grad_(true);
  token_logprobs(at::mm(plain, c.weight.t()), c.targets).sum().backward();
  expect_close(h.grad(), plain.grad(), 1e-12, "d hidden");
}

TEST(FusedLogprobs, TileFitsInAFewMegabytesAndBadShapesAreRefused) {
  EXPECT_EQ(fused_logprobs_tile(512), (int64_t{8} << 20) / (512 * 4));
  EXPECT_EQ(fused_logprobs_tile(int64_t{1} << 30), 1);
  const Case c = make_case(3, 4, 5, at::kFloat, 1);
  EXPECT_THROW(fused_token_logprobs(c.hidden, c.weight.t(), c.targets), Error);
  EXPECT_THROW(fused_token_logprobs(c.hidden, c.weight, c.targets.narrow(0, 0, 2)), Error);
  EXPECT_THROW(fused_token_logprobs(c.hidden, c.weight, c.targets, 0.0), Error);
  EXPECT_THROW(fused_token_logprobs(c.hidden, c.weight, c.targets.to(at::kMeta)), Error);
}

// An upstream gradient that is one value expanded over the rows (what sum() hands back, stride 0)
// gives the bits of the same values laid out in memory, in tiles and with the logits kept (the row
// sweep reads it through a pointer).
TEST(FusedLogprobs, ExpandedUpstreamGradient) {
  const Case c = make_case(40, 24, 301, at::kFloat, 21);
  for (bool keep : {false, true}) {
    std::vector<at::Tensor> grads;
    for (bool expanded : {false, true}) {
      at::Tensor h = c.hidden.clone().requires_grad_(true);
      at::Tensor w = c.weight.clone().requires_grad_(true);
      const at::Tensor lp = fused_token_logprobs(h, w, c.targets, 0.8, 64, keep);
      const at::Tensor upstream = expanded ? at::full({1}, 0.5f).expand({40}) : at::full({40}, 0.5f);
      EXPECT_EQ(upstream.stride(0), expanded ? 0 : 1);
      lp.backward(upstream);
      grads.push_back(h.grad());
      grads.push_back(w.grad());
    }
    EXPECT_TRUE(at::equal(grads[0], grads[2])) << "keep " << keep;
    EXPECT_TRUE(at::equal(grads[1], grads[3])) << "keep " << keep;
  }
}

// A row whose hidden state holds an inf or a NaN gets a non-finite log-prob, as the full-logits path
// gives it, and the other rows are untouched, so the step is found non-finite and skipped either way.
// Not the same non-finite value everywhere: where ATen's log_softmax takes a row with +inf logits to
// -inf for a finite target (the limit: all the mass on the inf entries), the fused sweep's online
// log-sum-exp gives NaN (inf - inf); a NaN row is NaN in both.
TEST(FusedLogprobs, NonFiniteRowsStayNonFinite) {
  Case c = make_case(12, 16, 150, at::kFloat, 22);
  c.hidden[2][3] = std::numeric_limits<float>::infinity();
  c.hidden[5][0] = std::numeric_limits<float>::quiet_NaN();
  c.hidden[7][1] = -std::numeric_limits<float>::infinity();
  at::NoGradGuard no_grad;
  const at::Tensor want = token_logprobs(at::mm(c.hidden, c.weight.t()), c.targets);
  const at::Tensor finite = at::isfinite(want);
  EXPECT_TRUE(at::equal(finite.logical_not().nonzero().view(-1), at::tensor({2, 5, 7}, at::kLong)));
  EXPECT_TRUE(std::isnan(want[5].item<float>()));
  for (int64_t tile : {0, 37}) {
    const at::Tensor got = fused_token_logprobs(c.hidden, c.weight, c.targets, 1.0, tile);
    EXPECT_TRUE(at::equal(at::isfinite(got), finite)) << "tile " << tile << ": " << got;
    EXPECT_TRUE(std::isnan(got[5].item<float>())) << "tile " << tile;
    EXPECT_TRUE(at::allclose(got.masked_select(finite), want.masked_select(finite), 1e-5, 1e-5)) << "tile " << tile;
  }
}

TEST(FusedLogprobs, LogitsKeptOnTheCpuUpTo128MiB) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_FALSE(fused_logprobs_preferred(512, 50257, cpu));                        // kept: 103 MB of logits
  EXPECT_FALSE(fused_logprobs_preferred(667, 50257, cpu));                        // 134.09 MB <= 128 MiB (134.22 MB)
  EXPECT_TRUE(fused_logprobs_preferred(668, 50257, cpu));                         // 134.29 MB: tiles
  EXPECT_TRUE(fused_logprobs_preferred(2048, 50257, cpu));                        // 412 MB of logits: tiles
  EXPECT_TRUE(fused_logprobs_preferred(512, 50257, c10::Device(c10::kCUDA, 0)));  // memory first
}

}  // namespace
}  // namespace aln::kernels
