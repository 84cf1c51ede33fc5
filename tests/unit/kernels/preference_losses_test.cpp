// Hand-computed values of the preference losses and the SafeDPO transform table.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "core/error.h"
#include "kernels/preference_losses.h"

namespace aln::kernels {
namespace {

PairLogprobs pairs(std::vector<double> pc, std::vector<double> pr, std::vector<double> rc, std::vector<double> rr) {
  PairLogprobs in;
  in.policy_chosen = at::tensor(pc, at::kDouble);
  in.policy_rejected = at::tensor(pr, at::kDouble);
  in.reference_chosen = at::tensor(rc, at::kDouble);
  in.reference_rejected = at::tensor(rr, at::kDouble);
  in.chosen_tokens = at::tensor(std::vector<double>{4, 2}, at::kDouble);
  in.rejected_tokens = at::tensor(std::vector<double>{2, 5}, at::kDouble);
  return in;
}

double log_sigmoid(double x) { return -std::log1p(std::exp(-x)); }

TEST(PreferenceLosses, HandComputedValues) {
  // h = (pc - rc) - (pr - rr) = (-1 - -2) - (-3 - -2) = 2 for pair 0 and (-4 - -4) - (-1 - -2) = -1 for pair 1.
  PairLogprobs in = pairs({-1, -4}, {-3, -1}, {-2, -4}, {-2, -2});
  const double beta = 0.5;
  auto sig = dpo_loss(in, DpoLossType::kSigmoid, beta, 0.0);
  EXPECT_NEAR(sig.loss.item<double>(), -(log_sigmoid(1.0) + log_sigmoid(-0.5)) / 2, 1e-12);
  EXPECT_DOUBLE_EQ(sig.accuracy.item<double>(), 0.5);
  EXPECT_NEAR(sig.margin.item<double>(), (beta * 2 + beta * -1) / 2, 1e-12);
  EXPECT_NEAR(sig.rewards_chosen[0].item<double>(), 0.5, 1e-12);
  auto hinge = dpo_loss(in, DpoLossType::kHinge, beta, 0.0);
  EXPECT_NEAR(hinge.loss.item<double>(), (0.0 + 1.5) / 2, 1e-12);
  // IPO: (1/4 - (-1)/2 - 1)^2 = 0.0625 and (0/2 - 1/5 - 1)^2 = 1.44.
  auto ipo = dpo_loss(in, DpoLossType::kIpo, beta, 0.0);
  EXPECT_NEAR(ipo.loss.item<double>(), (0.0625 + 1.44) / 2, 1e-12);
  auto smooth = dpo_loss(in, DpoLossType::kSigmoid, beta, 0.2);
  EXPECT_NEAR(smooth.per_pair[0].item<double>(), -0.8 * log_sigmoid(1.0) - 0.2 * log_sigmoid(-1.0), 1e-12);
  auto robust = dpo_loss(in, DpoLossType::kRobust, beta, 0.2);
  EXPECT_NEAR(robust.per_pair[0].item<double>(), (-0.8 * log_sigmoid(1.0) + 0.2 * log_sigmoid(-1.0)) / 0.6, 1e-12);
}

TEST(PreferenceLosses, SafeDpoMarginIsInLogitUnits) {
  PairLogprobs in = pairs({-1, -4}, {-3, -1}, {-2, -4}, {-2, -2});
  at::Tensor unsafe_w = at::zeros({2}, at::kDouble);
  at::Tensor unsafe_l = at::tensor(std::vector<double>{1, 0}, at::kDouble);
  auto out = safedpo_loss(in, unsafe_w, unsafe_l, 0.5, 10.0);
  // Pair 0 is safe-vs-unsafe: -log s(0.5 * 2 - 10); pair 1 has no margin: -log s(0.5 * -1).
  EXPECT_NEAR(out.per_pair[0].item<double>(), -log_sigmoid(1.0 - 10.0), 1e-12);
  EXPECT_NEAR(out.per_pair[1].item<double>(), -log_sigmoid(-0.5), 1e-12);
  auto no_margin = safedpo_loss(in, unsafe_w, unsafe_l, 0.5, 0.0);
  EXPECT_NEAR(no_margin.loss.item<double>(), dpo_loss(in, DpoLossType::kSigmoid, 0.5, 0.0).loss.item<double>(), 1e-12);
}

TEST(PreferenceLosses, TransformTable) {
  EXPECT_EQ(safedpo_action(false, false), SafePairAction::kKeep);
  EXPECT_EQ(safedpo_action(false, true), SafePairAction::kKeep);
  EXPECT_EQ(safedpo_action(true, false), SafePairAction::kSwap);
  EXPECT_EQ(safedpo_action(true, true), SafePairAction::kDrop);
}

TEST(PreferenceLosses, BadSettingsAreErrors) {
  PairLogprobs in = pairs({-1}, {-3}, {-2}, {-2});
  EXPECT_THROW(dpo_loss(in, DpoLossType::kRobust, 0.1, 0.5), aln::Error);
  EXPECT_THROW(dpo_loss(in, DpoLossType::kSigmoid, 0.0, 0.0), aln::Error);
  in.chosen_tokens = at::Tensor();
  EXPECT_THROW(dpo_loss(in, DpoLossType::kIpo, 0.1, 0.0), aln::Error);
  in.policy_rejected = at::zeros({3}, at::kDouble);
  EXPECT_THROW(dpo_loss(in, DpoLossType::kSigmoid, 0.1, 0.0), aln::Error);
}

}  // namespace
}  // namespace aln::kernels
