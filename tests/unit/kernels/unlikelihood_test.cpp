// PT-ALIGN's likelihood + fine-grained unlikelihood loss against hand-computed values.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "kernels/unlikelihood.h"

namespace aln::kernels {
namespace {

TEST(Unlikelihood, HandComputedValuesAndGradient) {
  // Positive rows: log-probs of 2 and 3 tokens; toxic rows with weights.
  at::Tensor pos =
      at::tensor({std::log(0.5), std::log(0.25), 0.0, std::log(0.8), std::log(0.5), std::log(0.1)}, at::kDouble)
          .view({2, 3});
  at::Tensor pos_mask = at::tensor({1, 1, 0, 1, 1, 1}, at::kLong).view({2, 3});
  at::Tensor tox = at::tensor({std::log(0.9), std::log(0.2), std::log(0.5), std::log(0.3), 0.0, 0.0}, at::kDouble)
                       .view({2, 3})
                       .set_requires_grad(true);
  at::Tensor tox_mask = at::tensor({1, 1, 1, 1, 0, 0}, at::kLong).view({2, 3});
  at::Tensor w = at::tensor({1.0, 0.0, 1.0, 0.0, 0.0, 0.0}, at::kDouble).view({2, 3});  // row 2: no weight
  UnlikelihoodOutput out = unlikelihood_loss(pos, pos_mask, tox, tox_mask, w, 0.5);
  const double mle =
      ((-(std::log(0.5) + std::log(0.25)) / 2) + (-(std::log(0.8) + std::log(0.5) + std::log(0.1)) / 3)) / 2;
  // Only row 1 has weights: -(log(1 - 0.9) + log(1 - 0.5)) / 2, and the mean is over that row alone.
  const double ul = -(std::log(0.1) + std::log(0.5)) / 2;
  EXPECT_NEAR(out.likelihood.item<double>(), mle, 1e-12);
  EXPECT_NEAR(out.unlikelihood.item<double>(), ul, 1e-12);
  EXPECT_NEAR(out.loss.item<double>(), mle + 0.5 * ul, 1e-12);
  EXPECT_NEAR(out.weighted_share.item<double>(), 2.0 / 4.0, 1e-12);
  EXPECT_NEAR(out.toxic_probability.item<double>(), (0.9 + 0.5) / 2, 1e-12);
  out.loss.backward();
  // d/dlogp of -0.5 * w log(1 - e^logp) / 2 = 0.5 * w * p / (1 - p) / 2.
  at::Tensor g = tox.grad();
  EXPECT_NEAR(g[0][0].item<double>(), 0.5 * 0.9 / 0.1 / 2, 1e-9);
  EXPECT_NEAR(g[0][1].item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(g[0][2].item<double>(), 0.5 * 0.5 / 0.5 / 2, 1e-9);
  EXPECT_NEAR(g[1][0].item<double>(), 0.0, 1e-12);
}

TEST(Unlikelihood, CertainTokensStayFiniteAndNoWeightsMeansNoTerm) {
  at::Tensor pos = at::zeros({1, 2}, at::kDouble);
  at::Tensor mask = at::ones({1, 2}, at::kLong);
  at::Tensor tox = at::zeros({1, 2}, at::kDouble).set_requires_grad(true);  // p = 1: log(1 - p) = -inf unclamped
  UnlikelihoodOutput out = unlikelihood_loss(pos, mask, tox, mask, at::ones({1, 2}, at::kDouble), 1.0);
  EXPECT_NEAR(out.unlikelihood.item<double>(), -std::log(1e-6), 1e-3);  // clamped at log(1 - 1e-6)
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  UnlikelihoodOutput none = unlikelihood_loss(pos, mask, tox, mask, at::zeros({1, 2}, at::kDouble), 1.0);
  EXPECT_EQ(none.unlikelihood.item<double>(), 0.0);
  EXPECT_EQ(none.weighted_share.item<double>(), 0.0);
}

}  // namespace
}  // namespace aln::kernels
