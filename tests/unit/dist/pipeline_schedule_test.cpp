// Pipeline schedules and stage partitioning: pure arithmetic, checked exhaustively on small grids.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "distributed/pipeline_schedule.h"

namespace aln::dist {
namespace {

// Simulates a whole pipeline: stage s may run forward m once stage s-1 did, and backward m once
// stage s+1 did (the last stage's backward follows its own forward). Returns false on a deadlock.
bool runs_to_completion(PipelineSchedule schedule, int stages, int micro) {
  std::vector<std::vector<PipelineOp>> ops;
  for (int s = 0; s < stages; ++s) ops.push_back(pipeline_ops(schedule, stages, s, micro));
  std::vector<size_t> next(stages, 0);
  std::map<std::pair<int, int>, bool> fwd_done, bwd_done;
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < stages; ++s) {
      if (next[s] == ops[s].size()) continue;
      const PipelineOp op = ops[s][next[s]];
      const bool ready = op.forward ? (s == 0 || fwd_done[{s - 1, op.micro}])
                                    : (s == stages - 1 ? fwd_done[{s, op.micro}] : bwd_done[{s + 1, op.micro}]);
      if (!ready) continue;
      (op.forward ? fwd_done : bwd_done)[{s, op.micro}] = true;
      ++next[s];
      progress = true;
    }
  }
  for (int s = 0; s < stages; ++s) {
    if (next[s] != ops[s].size()) return false;
  }
  return true;
}

TEST(PipelineSchedule, EveryMicroBatchOnceForwardBeforeBackwardInOrder) {
  for (auto schedule : {PipelineSchedule::kGpipe, PipelineSchedule::kOneFOneB}) {
    for (int p = 1; p <= 5; ++p) {
      for (int m = 1; m <= 9; ++m) {
        for (int s = 0; s < p; ++s) {
          const auto ops = pipeline_ops(schedule, p, s, m);
          ASSERT_EQ(ops.size(), 2u * m);
          std::vector<int> forwards, backwards;
          int alive = 0, most = 0;
          for (const auto& op : ops) {
            if (op.forward) {
              forwards.push_back(op.micro);
              most = std::max(most, ++alive);
            } else {
              // a backward only after its forward
              ASSERT_NE(std::find(forwards.begin(), forwards.end(), op.micro), forwards.end());
              backwards.push_back(op.micro);
              --alive;
            }
          }
          for (int k = 0; k < m; ++k) {
            EXPECT_EQ(forwards[k], k);
            EXPECT_EQ(backwards[k], k);  // same accumulation order in both schedules
          }
          // GPipe keeps every micro-batch alive; 1F1B at most (stages - stage).
          EXPECT_EQ(most, schedule == PipelineSchedule::kGpipe ? m : std::min(p - s, m)) << p << " " << m << " " << s;
        }
        EXPECT_TRUE(runs_to_completion(schedule, p, m)) << p << " stages, " << m << " micro-batches";
      }
    }
  }
}

TEST(PipelineSchedule, OneFOneBInterleavesAfterWarmUp) {
  // Stage 0 of 3 with 4 micro-batches: F0 F1 | F2 B0 F3 B1 | B2 B3.
  const auto ops = pipeline_ops(PipelineSchedule::kOneFOneB, 3, 0, 4);
  std::string text;
  for (const auto& op : ops) text += (op.forward ? "F" : "B") + std::to_string(op.micro) + " ";
  EXPECT_EQ(text, "F0 F1 F2 B0 F3 B1 B2 B3 ");
}

TEST(PipelineSchedule, TheoreticalBubble) {
  EXPECT_DOUBLE_EQ(theoretical_bubble(1, 8), 0.0);
  EXPECT_DOUBLE_EQ(theoretical_bubble(4, 1), 0.75);
  EXPECT_DOUBLE_EQ(theoretical_bubble(2, 8), 1.0 / 9.0);
}

TEST(StagePartition, BalancesByCostWithEmbeddingAndHead) {
  // Equal layers: an even split.
  EXPECT_EQ(balance_stages(std::vector<double>(8, 1.0), 0, 0, 4), (std::vector<int64_t>{0, 2, 4, 6, 8}));
  // A heavy head (4 layers' worth) pushes layers to the earlier stages.
  EXPECT_EQ(balance_stages(std::vector<double>(8, 1.0), 0, 4, 2), (std::vector<int64_t>{0, 6, 8}));
  // ... and a heavy embedding to the later ones.
  EXPECT_EQ(balance_stages(std::vector<double>(8, 1.0), 4, 0, 2), (std::vector<int64_t>{0, 2, 8}));
  // As many stages as layers: one each.
  EXPECT_EQ(balance_stages(std::vector<double>(3, 5.0), 100, 100, 3), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(StagePartition, ExplicitListIsChecked) {
  auto ok = explicit_stages({1, 3}, 4, 2, "parallel.policy.stage_layers");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, (std::vector<int64_t>{0, 1, 4}));
  auto wrong_sum = explicit_stages({1, 2}, 4, 2, "parallel.policy.stage_layers");
  EXPECT_NE(wrong_sum.status().message().find("hold 3 layers but the model has 4"), std::string::npos);
  auto wrong_count = explicit_stages({4}, 4, 2, "parallel.policy.stage_layers");
  EXPECT_NE(wrong_count.status().message().find("1 entries for 2 pipeline stages"), std::string::npos);
  auto empty_stage = explicit_stages({0, 4}, 4, 2, "parallel.policy.stage_layers");
  EXPECT_NE(empty_stage.status().message().find("parallel.policy.stage_layers[0]"), std::string::npos);
}

}  // namespace
}  // namespace aln::dist
