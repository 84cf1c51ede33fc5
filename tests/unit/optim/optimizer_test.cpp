// AdamW against LibTorch's own torch::optim::AdamW (an independent implementation), schedules and
// clipping against hand-computed values, and bitwise state round trips.
#include <gtest/gtest.h>

#include <torch/optim/adamw.h>
#include <torch/version.h>

#include <cmath>

#include "core/optim/optimizer.h"

namespace aln::optim {
namespace {

TEST(AdamW, MatchesLibTorchAdamW) {
  at::manual_seed(0);
  at::Tensor init = at::randn({5, 3}, at::kDouble);
  TensorMap ours{{"w", init.clone().set_requires_grad(true)}};
  at::Tensor theirs = init.clone().set_requires_grad(true);
  AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  AdamW adam(o);
  torch::optim::AdamW reference({theirs}, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  for (int step = 0; step < 20; ++step) {
    at::Tensor g = at::randn({5, 3}, at::kDouble);
    ours["w"].mutable_grad() = g.clone();
    theirs.mutable_grad() = g.clone();
    adam.step(ours, 0.01);
    reference.step();
  }
  EXPECT_LT((ours["w"] - theirs).abs().max().item<double>(), 1e-12);
}

// The fused update (ATen's multi-tensor kernel, what GPUs use) is the same AdamW: against the
// unfused one on the CPU, several tensors and dtypes, weight decay, 20 steps, and a state written by
// one and read by the other.
TEST(AdamW, FusedMatchesUnfused) {
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 4
  GTEST_SKIP() << "LibTorch before 2.4 has no CPU kernel for _fused_adamw_ (the engine uses it on GPUs only)";
#endif
  at::manual_seed(3);
  TensorMap plain{{"a", at::randn({7, 5}, at::kDouble)}, {"b", at::randn({11}, at::kDouble)}, {"c", at::randn({3, 2})}};
  TensorMap fused;
  for (auto& [name, t] : plain) {
    t.set_requires_grad(true);
    fused[name] = t.detach().clone().set_requires_grad(true);
  }
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW unfused_adam(o);
  o.fused = true;
  AdamW fused_adam(o);
  for (int step = 0; step < 20; ++step) {
    for (auto& [name, t] : plain) {
      at::Tensor g = at::randn(t.sizes(), t.options().requires_grad(false));
      t.mutable_grad() = g.clone();
      fused[name].mutable_grad() = g.clone();
    }
    unfused_adam.step(plain, 0.01);
    fused_adam.step(fused, 0.01);
  }
  for (const auto& [name, t] : plain) {
    const double tol = t.scalar_type() == at::kDouble ? 1e-12 : 1e-6;
    EXPECT_LT((t - fused[name]).abs().max().item<double>(), tol) << name;
  }
  AdamW resumed(o);
  resumed.load_state(unfused_adam.state());
  EXPECT_EQ(resumed.steps(), 20);
}

TEST(AdamW, StateRoundTripIsBitwise) {
  at::manual_seed(1);
  TensorMap a{{"w", at::randn({4}).set_requires_grad(true)}};
  TensorMap b{{"w", a["w"].detach().clone().set_requires_grad(true)}};
  AdamW first(AdamWOptions{}), second(AdamWOptions{});
  for (int s = 0; s < 3; ++s) {
    at::Tensor g = at::randn({4});
    a["w"].mutable_grad() = g.clone();
    b["w"].mutable_grad() = g.clone();
    first.step(a, 1e-2);
    second.step(b, 1e-2);
  }
  AdamW resumed(AdamWOptions{});
  resumed.load_state(second.state());
  EXPECT_EQ(resumed.steps(), 3);
  at::Tensor g = at::randn({4});
  a["w"].mutable_grad() = g.clone();
  b["w"].mutable_grad() = g.clone();
  first.step(a, 1e-2);
  resumed.step(b, 1e-2);
  EXPECT_TRUE(at::equal(a["w"], b["w"]));
}

// The unfused update goes through large parameters a chunk of 2^18 entries at a time: the same bits
// as the whole-tensor formula (every operation is elementwise), for a parameter of several chunks
// and a tail, a small one, and a non-contiguous one (updated whole); a parameter without a gradient
// gets no moments.
TEST(AdamW, ChunkedUpdateIsTheWholeTensorFormula) {
  at::manual_seed(4);
  TensorMap params{{"big", at::randn({2 * (1 << 18) + 77})},
                   {"small", at::randn({3, 5})},
                   {"strided", at::randn({600, 900}).t()},
                   {"unused", at::randn({4})}};
  TensorMap expected, m, v;
  for (auto& [name, t] : params) {
    t.set_requires_grad(true);
    expected[name] = t.detach().clone();
    m[name] = at::zeros_like(expected[name]);
    v[name] = at::zeros_like(expected[name]);
  }
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW adam(o);
  for (int step = 1; step <= 3; ++step) {
    for (auto& [name, t] : params) {
      if (name == "unused") continue;
      const at::Tensor g = at::randn(t.sizes());
      t.mutable_grad() = g.clone();
      // torch.optim.AdamW's single-tensor update, written out.
      at::Tensor& p = expected[name];
      p.mul_(1 - 0.01 * o.weight_decay);
      m[name].lerp_(g, 1 - o.beta1);
      v[name].mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
      const double bias1 = 1 - std::pow(o.beta1, step), bias2 = 1 - std::pow(o.beta2, step);
      p.addcdiv_(m[name], (v[name].sqrt() / std::sqrt(bias2)).add_(o.eps), -0.01 / bias1);
    }
    adam.step(params, 0.01);
  }
  for (const auto& [name, t] : params) {
    EXPECT_TRUE(at::equal(t.detach(), expected[name])) << name;
  }
  const TensorMap state = adam.state();
  EXPECT_EQ(state.size(), 7u);  // three parameters' two moments, and the step
  EXPECT_EQ(state.count("unused.exp_avg"), 0u);
  EXPECT_TRUE(at::equal(state.at("big.exp_avg_sq"), v["big"]));
}

// The sum of squares in float64 a chunk at a time, against one float64 sum; and nothing for an
// empty gradient.
TEST(Clip, SumOfSquaresOverChunks) {
  at::manual_seed(6);
  const at::Tensor g = at::randn({3 * (1 << 20) + 5});
  const double exact = g.to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(sum_of_squares(g).item<double>(), exact, 1e-12 * exact);
  EXPECT_EQ(sum_of_squares(g).scalar_type(), at::kDouble);
  EXPECT_EQ(sum_of_squares(at::empty({0})).item<double>(), 0.0);
  // A float64 gradient is read, not squared in place.
  const at::Tensor g64 = g.to(at::kDouble), kept = g64.clone();
  EXPECT_NEAR(sum_of_squares(g64).item<double>(), exact, 1e-12 * exact);
  EXPECT_TRUE(at::equal(g64, kept));
  const at::Tensor strided = at::randn({1500, 1400}).t();
  const double strided_exact = strided.to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(sum_of_squares(strided).item<double>(), strided_exact, 1e-12 * strided_exact);
}

TEST(Schedule, WarmupThenDecay) {
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 0, 4, 14), 0.25);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 3, 4, 14), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 4, 4, 14), 1.0);
  EXPECT_NEAR(scheduled_lr(ScheduleKind::kCosine, 1.0, 9, 4, 14), 0.5, 1e-12);
  EXPECT_NEAR(scheduled_lr(ScheduleKind::kCosine, 1.0, 14, 4, 14), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kLinear, 2.0, 9, 4, 14), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kConstant, 2.0, 100, 0, 14), 2.0);
}

// transformers' get_cosine_schedule_with_warmup / get_linear_schedule_with_warmup (TRL's schedules):
// lr*s/W during warm-up, so step 0 runs at lr 0 and step W at the full lr; the decay is unchanged.
TEST(Schedule, WarmupStartAtZeroMatchesTransformers) {
  constexpr auto kZero = WarmupStart::kStartAtZero;
  EXPECT_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 0, 4, 14, kZero), 0.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 1, 4, 14, kZero), 0.25);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 3, 4, 14, kZero), 0.75);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 4, 4, 14, kZero), 1.0);
  EXPECT_NEAR(scheduled_lr(ScheduleKind::kCosine, 1.0, 9, 4, 14, kZero), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kLinear, 2.0, 2, 4, 14, kZero), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kLinear, 2.0, 9, 4, 14, kZero), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kConstant, 2.0, 1, 4, 14, kZero), 0.5);
  // Without warm-up the two conventions agree.
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kLinear, 2.0, 0, 0, 10, kZero), 2.0);
  // Aln's default is one step ahead: lr*(s+1)/W.
  EXPECT_DOUBLE_EQ(scheduled_lr(ScheduleKind::kCosine, 1.0, 0, 4, 14), 0.25);
}

TEST(Clip, ScalesToMaxNormAndReportsNonFinite) {
  TensorMap p{{"a", at::zeros({2}).set_requires_grad(true)}, {"b", at::zeros({1}).set_requires_grad(true)}};
  p["a"].mutable_grad() = at::tensor({3.0f, 0.0f});
  p["b"].mutable_grad() = at::tensor({4.0f});
  EXPECT_NEAR(clip_grad_norm(p, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(p["a"].grad()[0].item<float>(), 0.6f, 1e-5);
  EXPECT_NEAR(p["b"].grad()[0].item<float>(), 0.8f, 1e-5);
  p["b"].mutable_grad() = at::tensor({NAN});
  EXPECT_FALSE(std::isfinite(clip_grad_norm(p, 1.0)));
}

}  // namespace
}  // namespace aln::optim
