// The controllable method's level arithmetic: quantile levels with ties, the distillation filter's
// in-bin position, Spearman's correlation on hand-computed cases, the ordered-pair rate, and the
// control-token names every command agrees on.
#include <gtest/gtest.h>

#include <cmath>

#include "trainers/controllable/control_tokens.h"
#include "trainers/controllable/levels.h"

namespace aln::trainers::controllable {
namespace {

TEST(Controllable, QuantileLevelsUseMidRanks) {
  LevelScale s({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 5);
  EXPECT_DOUBLE_EQ(s.position(1), 0.05);
  EXPECT_EQ(s.level(1), 0);
  EXPECT_EQ(s.level(2), 0);
  EXPECT_EQ(s.level(3), 1);
  EXPECT_EQ(s.level(10), 4);
  EXPECT_EQ(s.level(100), 4);  // above every score
  EXPECT_EQ(s.level(-1), 0);
  EXPECT_NEAR(s.inside(3), 0.25, 1e-12);  // position 0.25 -> 1.25 bins
  // A binary scorer: the two values land at 0.25 and 0.75, levels 1 and 3 of 5.
  LevelScale b({0, 0, 0, 0, 1, 1, 1, 1}, 5);
  EXPECT_DOUBLE_EQ(b.position(0), 0.25);
  EXPECT_EQ(b.level(0), 1);
  EXPECT_EQ(b.level(1), 3);
}

TEST(Controllable, SpearmanMatchesHandComputedValues) {
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0, 1e-12);
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0, 1e-12);
  EXPECT_NEAR(spearman({1, 2, 3, 4, 5}, {2, 1, 4, 3, 5}), 0.8, 1e-12);            // 1 - 6*4/(5*24)
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {1, 1, 2, 2}), 4 / std::sqrt(20.0), 1e-12);  // ties: mid-ranks
  EXPECT_EQ(spearman({1, 2, 3}, {5, 5, 5}), 0.0);                                 // constant side
}

TEST(Controllable, OrderedPairRateCountsTiesAsHalf) {
  EXPECT_DOUBLE_EQ(ordered_pair_rate({{1, 2, 3}}), 1.0);
  EXPECT_DOUBLE_EQ(ordered_pair_rate({{3, 2, 1}}), 0.0);
  EXPECT_DOUBLE_EQ(ordered_pair_rate({{1, 1}, {1, 2}}), 0.75);
  EXPECT_DOUBLE_EQ(ordered_pair_rate({}), 0.0);
}

TEST(Controllable, ControlTokenNamesAndPrefix) {
  EXPECT_EQ(control_token_names(2),
            (std::vector<std::string>{"<|helpful_0|>", "<|helpful_1|>", "<|harmless_0|>", "<|harmless_1|>"}));
  EXPECT_EQ(control_prefix(3, 0), "<|helpful_3|><|harmless_0|>");
}

}  // namespace
}  // namespace aln::trainers::controllable
