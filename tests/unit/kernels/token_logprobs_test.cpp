// Token log-probs: CPU reference vs LibTorch composite (forward, backward, dtypes, shapes), finite
// differences in float64, the online log-sum-exp rule the CUDA kernel uses (replayed on the CPU
// over random reduction trees), and the CUDA kernel itself where a device exists.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <random>

#include "core/error.h"
#include "kernels/cuda_kernels.h"
#include "kernels/logsumexp_math.h"
#include "kernels/token_logprobs.h"

namespace aln::kernels {
namespace {

struct Case {
  int64_t rows;
  int64_t vocab;
};

template <typename T>
std::vector<T> reference(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor l = logits.contiguous();
  std::vector<T> out(l.size(0));
  token_logprobs_reference<T>(l.data_ptr<T>(), targets.data_ptr<int64_t>(), l.size(0), l.size(1), out.data());
  return out;
}

TEST(TokenLogprobs, CompositeMatchesReferenceFloat64) {
  at::manual_seed(1);
  for (Case c : {Case{1, 1}, Case{3, 7}, Case{17, 1000}, Case{4, 50257}}) {
    at::Tensor logits = at::randn({c.rows, c.vocab}, at::kDouble) * 4;
    at::Tensor targets = at::randint(c.vocab, {c.rows}, at::kLong);
    at::Tensor got = token_logprobs(logits, targets);
    auto want = reference<double>(logits, targets);
    for (int64_t i = 0; i < c.rows; ++i) {
      EXPECT_NEAR(got[i].item<double>(), want[i], 1e-12 * (1 + std::abs(want[i]))) << c.rows << "x" << c.vocab;
    }
  }
}

TEST(TokenLogprobs, CompositeMatchesReferenceFloat32AndBf16) {
  at::manual_seed(2);
  at::Tensor logits = at::randn({9, 3000}, at::kFloat) * 3;
  at::Tensor targets = at::randint(3000, {9}, at::kLong);
  auto want = reference<double>(logits.to(at::kDouble), targets);
  at::Tensor f32 = token_logprobs(logits, targets);
  at::Tensor bf16 = token_logprobs(logits.to(at::kBFloat16), targets);
  EXPECT_EQ(bf16.scalar_type(), at::kBFloat16);
  for (int64_t i = 0; i < 9; ++i) {
    EXPECT_NEAR(f32[i].item<double>(), want[i], 1e-5 * (1 + std::abs(want[i])));
    // bf16 has 8 bits of mantissa: inputs and the result are rounded to ~2^-8 relative.
    EXPECT_NEAR(bf16[i].item<double>(), want[i], 0.05 * (1 + std::abs(want[i])));
  }
}

TEST(TokenLogprobs, BatchedShapesAndExtremeValues) {
  at::Tensor logits = at::zeros({2, 3, 5}, at::kFloat);
  logits[0][0][2] = 1000.0f;  // overflow in a naive exp
  logits[1][2][0] = -1000.0f;
  at::Tensor targets = at::tensor({2, 0, 1, 4, 3, 0}, at::kLong).view({2, 3});
  at::Tensor out = token_logprobs(logits, targets);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_NEAR(out[0][0].item<float>(), 0.0f, 1e-6);
  EXPECT_NEAR(out[0][1].item<float>(), -std::log(5.0f), 1e-6);
  EXPECT_LT(out[1][2].item<float>(), -999.0f);
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
}

TEST(TokenLogprobs, BackwardMatchesReference) {
  at::manual_seed(3);
  const int64_t rows = 6, vocab = 257;
  at::Tensor logits = (at::randn({rows, vocab}, at::kDouble) * 2).set_requires_grad(true);
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  at::Tensor grad_out = at::randn({rows}, at::kDouble);
  at::Tensor out = token_logprobs(logits, targets);
  auto grads = torch::autograd::grad({out}, {logits}, {grad_out});
  std::vector<double> want(rows * vocab);
  at::Tensor l = logits.detach().contiguous();
  token_logprobs_backward_reference<double>(l.data_ptr<double>(), targets.data_ptr<int64_t>(),
                                            grad_out.data_ptr<double>(), rows, vocab, want.data());
  at::Tensor got = grads[0].contiguous();
  double max_err = 0;
  for (int64_t k = 0; k < rows * vocab; ++k) max_err = std::max(max_err, std::abs(got.data_ptr<double>()[k] - want[k]));
  EXPECT_LT(max_err, 1e-12);
}

TEST(TokenLogprobs, GradientMatchesFiniteDifferences) {
  at::manual_seed(4);
  const int64_t rows = 3, vocab = 11;
  at::Tensor logits = at::randn({rows, vocab}, at::kDouble);
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  at::Tensor x = logits.clone().set_requires_grad(true);
  at::Tensor loss = token_logprobs(x, targets).sum();
  at::Tensor analytic = torch::autograd::grad({loss}, {x})[0];
  const double h = 1e-6;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t v = 0; v < vocab; ++v) {
      at::Tensor plus = logits.clone(), minus = logits.clone();
      plus[i][v] += h;
      minus[i][v] -= h;
      const double numeric =
          (token_logprobs(plus, targets).sum().item<double>() - token_logprobs(minus, targets).sum().item<double>()) /
          (2 * h);
      EXPECT_NEAR(analytic[i][v].item<double>(), numeric, 1e-7);
    }
  }
}

TEST(TokenLogprobs, RejectsBadInput) {
  at::Tensor logits = at::zeros({2, 4});
  EXPECT_THROW(token_logprobs(logits, at::zeros({3}, at::kLong)), aln::Error);
  EXPECT_THROW(token_logprobs(logits, at::zeros({2}, at::kInt)), aln::Error);
  std::vector<float> row(4, 0.0f), out(1);
  int64_t bad = 9;
  EXPECT_THROW(token_logprobs_reference<float>(row.data(), &bad, 1, 4, out.data()), aln::Error);
}

// The CUDA kernel folds strided slices with lse_push and merges them with lse_combine in a tree.
// Replaying that on the CPU, for many random split points and merge orders, must give the
// two-pass reference: the device math is checked here even though no GPU exists.
TEST(OnlineLogSumExp, AnyReductionTreeMatchesTwoPassReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 6.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const int vocab = 1 + static_cast<int>(rng() % 3000);
    const int threads = 1 << (rng() % 9);  // 1..256, as the kernel's block
    std::vector<float> x(vocab);
    for (auto& v : x) v = normal(rng);
    if (trial % 10 == 0) x[rng() % vocab] = 500.0f;  // a dominant logit
    std::vector<LseState<float>> partial(threads, lse_empty<float>());
    for (int v = 0; v < vocab; ++v) partial[v % threads] = lse_push(partial[v % threads], x[v]);
    for (int stride = threads / 2; stride > 0; stride /= 2) {
      for (int t = 0; t < stride; ++t) partial[t] = lse_combine(partial[t], partial[t + stride]);
    }
    const int64_t target = static_cast<int64_t>(rng() % vocab);
    float want = 0;
    token_logprobs_reference<float>(x.data(), &target, 1, vocab, &want);
    const float got = x[target] - lse_value(partial[0]);
    ASSERT_NEAR(got, want, 2e-5f * (1 + std::abs(want))) << "vocab " << vocab << " threads " << threads;
  }
}

TEST(TokenLogprobsCuda, MatchesReferenceOnDevice) {
  std::string reason;
  if (!cuda::compiled()) GTEST_SKIP() << "built without CUDA";
  if (cuda::device_count(&reason) == 0) GTEST_SKIP() << "no CUDA device here (" << reason << "); compiled and linked only";
  at::manual_seed(6);
  for (Case c : {Case{1, 1}, Case{5, 255}, Case{64, 50257}}) {
    at::Tensor logits = at::randn({c.rows, c.vocab}, at::kFloat) * 5;
    at::Tensor targets = at::randint(c.vocab, {c.rows}, at::kLong);
    std::vector<float> got(c.rows);
    ASSERT_TRUE(cuda::token_logprobs_f32_host(logits.data_ptr<float>(), targets.data_ptr<int64_t>(), c.rows, c.vocab,
                                              got.data())
                    .ok());
    auto want = reference<double>(logits.to(at::kDouble), targets);
    for (int64_t i = 0; i < c.rows; ++i) EXPECT_NEAR(got[i], want[i], 1e-4 * (1 + std::abs(want[i])));
  }
}

TEST(TokenLogprobsCuda, WithoutDeviceGivesClearError) {
  std::string reason;
  if (cuda::compiled() && cuda::device_count(&reason) > 0) GTEST_SKIP() << "a device exists";
  float logit = 0, out = 0;
  int64_t target = 0;
  absl::Status s = cuda::token_logprobs_f32_host(&logit, &target, 1, 1, &out);
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(s.message().empty());
}

}  // namespace
}  // namespace aln::kernels
