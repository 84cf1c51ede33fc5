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

// Runs every stage's message groups as NCCL runs point-to-point operations queued on one stream: a
// stage's groups one after another, a group's messages together, each message done once the peer
// has the matching message in the group it is running (a send waits for its receive; nothing is
// buffered). Returns false when some stage can never finish.
bool messages_complete(const std::vector<std::vector<std::vector<PipelineMessage>>>& stages) {
  const int n = static_cast<int>(stages.size());
  std::vector<size_t> next(n, 0);
  std::vector<std::vector<bool>> done(n);  // per message of the stage's running group
  for (int s = 0; s < n; ++s) done[s].assign(stages[s].empty() ? 0 : stages[s][0].size(), false);
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < n; ++s) {
      if (next[s] == stages[s].size()) continue;
      const auto& group = stages[s][next[s]];
      for (size_t i = 0; i < group.size(); ++i) {
        if (done[s][i]) continue;
        const PipelineMessage& m = group[i];
        const int p = m.peer;
        if (next[p] == stages[p].size()) continue;
        const auto& theirs = stages[p][next[p]];
        for (size_t j = 0; j < theirs.size(); ++j) {
          const PipelineMessage& t = theirs[j];
          if (!done[p][j] && t.peer == s && t.send != m.send && t.activation == m.activation && t.micro == m.micro) {
            done[s][i] = done[p][j] = true;
            progress = true;
          }
        }
      }
      // Groups finished (this one, or the peer's just completed by it) make way for the next.
      for (int r = 0; r < n; ++r) {
        if (next[r] < stages[r].size() && std::all_of(done[r].begin(), done[r].end(), [](bool d) { return d; })) {
          ++next[r];
          done[r].assign(next[r] < stages[r].size() ? stages[r][next[r]].size() : 0, false);
          progress = true;
        }
      }
    }
  }
  for (int s = 0; s < n; ++s) {
    if (next[s] != stages[s].size()) return false;
  }
  return true;
}

TEST(PipelineMessages, GroupedSendsAndReceivesNeverWaitForEachOther) {
  for (auto schedule : {PipelineSchedule::kGpipe, PipelineSchedule::kOneFOneB}) {
    for (int p = 1; p <= 6; ++p) {
      for (int m = 1; m <= 12; ++m) {
        std::vector<std::vector<std::vector<PipelineMessage>>> grouped, alone;
        for (int s = 0; s < p; ++s) {
          grouped.push_back(pipeline_messages(schedule, p, s, m));
          // Every pass's messages are there: a receive for each forward past the first stage and
          // each backward before the last, a send for each forward before the last and each
          // backward past the first; groups hold one or two, a send before a receive.
          int sends = 0, receives = 0;
          alone.emplace_back();
          for (const auto& group : grouped.back()) {
            ASSERT_TRUE(group.size() == 1 || (group.size() == 2 && group[0].send && !group[1].send));
            for (const auto& message : group) {
              (message.send ? sends : receives) += 1;
              alone.back().push_back({message});
            }
          }
          const int inner = (s > 0) + (s < p - 1);
          EXPECT_EQ(sends, inner * m);
          EXPECT_EQ(receives, inner * m);
        }
        EXPECT_TRUE(messages_complete(grouped)) << p << " stages, " << m << " micro-batches";
        if (p >= 2 && m >= 2) {
          // Each message on its own, a 1F1B stage past its warm-up queues its output's send before the
          // next gradient's receive, and its neighbour the gradient's send before the next input's
          // receive: each waits for the other. GPipe's forwards all go before any gradient comes back.
          EXPECT_EQ(messages_complete(alone), schedule == PipelineSchedule::kGpipe)
              << p << " stages, " << m << " micro-batches";
        }
      }
    }
  }
  // The steady state of two stages: the first sends micro-batch 1's output with the receive of
  // micro-batch 0's gradient, the second micro-batch 0's gradient with micro-batch 1's input.
  const auto first = pipeline_messages(PipelineSchedule::kOneFOneB, 2, 0, 3);
  ASSERT_EQ(first.size(), 4u);
  ASSERT_EQ(first[1].size(), 2u);
  EXPECT_TRUE(first[1][0].send && first[1][0].activation && first[1][0].micro == 1);
  EXPECT_TRUE(!first[1][1].send && !first[1][1].activation && first[1][1].micro == 0);
  const auto second = pipeline_messages(PipelineSchedule::kOneFOneB, 2, 1, 3);
  ASSERT_EQ(second.size(), 4u);
  ASSERT_EQ(second[1].size(), 2u);
  EXPECT_TRUE(second[1][0].send && !second[1][0].activation && second[1][0].micro == 0);
  EXPECT_TRUE(!second[1][1].send && second[1][1].activation && second[1][1].micro == 1);
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
