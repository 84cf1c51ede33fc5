#include "distributed/pipeline_schedule.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace aln::dist {

std::vector<PipelineOp> pipeline_ops(PipelineSchedule schedule, int stages, int stage, int micro_batches) {
  ALN_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1, "pipeline_ops: bad arguments");
  std::vector<PipelineOp> ops;
  if (schedule == PipelineSchedule::kGpipe) {
    for (int m = 0; m < micro_batches; ++m) ops.push_back({true, m});
    for (int m = 0; m < micro_batches; ++m) ops.push_back({false, m});
    return ops;
  }
  // 1F1B: stage s first runs the forwards the later stages need to fill the pipeline, then
  // alternates one forward with one backward, then drains the remaining backwards.
  const int warmup = std::min(stages - stage - 1, micro_batches);
  int next_forward = 0;
  for (; next_forward < warmup; ++next_forward) ops.push_back({true, next_forward});
  int next_backward = 0;
  for (; next_forward < micro_batches; ++next_forward, ++next_backward) {
    ops.push_back({true, next_forward});
    ops.push_back({false, next_backward});
  }
  for (; next_backward < micro_batches; ++next_backward) ops.push_back({false, next_backward});
  return ops;
}

bool receives_first(const PipelineOp& op, int stages, int stage) { return op.forward ? stage > 0 : stage < stages - 1; }

std::vector<std::vector<PipelineMessage>> pipeline_messages(PipelineSchedule schedule, int stages, int stage,
                                                            int micro_batches) {
  const std::vector<PipelineOp> ops = pipeline_ops(schedule, stages, stage, micro_batches);
  std::vector<std::vector<PipelineMessage>> groups;
  bool send_waits = false;  // the last group holds a send the next receive joins
  for (size_t i = 0; i < ops.size(); ++i) {
    const PipelineOp& op = ops[i];
    if (receives_first(op, stages, stage)) {
      const PipelineMessage received{false, op.forward, op.micro, op.forward ? stage - 1 : stage + 1};
      if (send_waits) {
        groups.back().push_back(received);
      } else {
        groups.push_back({received});
      }
    }
    send_waits = false;
    const bool sends = op.forward ? stage < stages - 1 : stage > 0;
    if (sends) {
      groups.push_back({PipelineMessage{true, op.forward, op.micro, op.forward ? stage + 1 : stage - 1}});
      send_waits = i + 1 < ops.size() && receives_first(ops[i + 1], stages, stage);
    }
  }
  return groups;
}

double theoretical_bubble(int stages, int micro_batches) {
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
}

std::vector<int64_t> balance_stages(const std::vector<double>& layer_cost, double first_extra, double last_extra,
                                    int stages) {
  const int n = static_cast<int>(layer_cost.size());
  ALN_CHECK(stages >= 1 && stages <= n, "cannot split ", n, " layers into ", stages, " stages of at least one layer");
  std::vector<double> prefix(n + 1, 0.0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + layer_cost[i];
  // best[s][i]: the smallest possible largest cost when the first s stages hold layers [0, i).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(n + 1, inf));
  std::vector<std::vector<int>> cut(stages + 1, std::vector<int>(n + 1, 0));
  best[0][0] = 0;
  for (int s = 1; s <= stages; ++s) {
    for (int i = s; i <= n - (stages - s); ++i) {
      for (int j = s - 1; j < i; ++j) {
        if (best[s - 1][j] == inf) continue;
        double cost = prefix[i] - prefix[j];
        if (s == 1) cost += first_extra;
        if (s == stages) cost += last_extra;
        const double worst = std::max(best[s - 1][j], cost);
        if (worst < best[s][i]) {
          best[s][i] = worst;
          cut[s][i] = j;
        }
      }
    }
  }
  std::vector<int64_t> bounds(stages + 1, 0);
  bounds[stages] = n;
  for (int s = stages, i = n; s > 0; --s) {
    i = cut[s][i];
    bounds[s - 1] = i;
  }
  return bounds;
}

absl::StatusOr<std::vector<int64_t>> explicit_stages(const std::vector<int64_t>& layers_per_stage, int64_t layers,
                                                     int stages, const std::string& where) {
  if (static_cast<int>(layers_per_stage.size()) != stages) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", layers_per_stage.size(), " entries for ", stages,
                                                   " pipeline stages; give one layer count per stage"));
  }
  std::vector<int64_t> bounds = {0};
  for (size_t s = 0; s < layers_per_stage.size(); ++s) {
    if (layers_per_stage[s] < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "[", s, "]: ", layers_per_stage[s], " layers; every stage needs at least one"));
    }
    bounds.push_back(bounds.back() + layers_per_stage[s]);
  }
  if (bounds.back() != layers) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the stages hold ", bounds.back(),
                                                   " layers but the model has ", layers, "; make them add up to ",
                                                   layers));
  }
  return bounds;
}

}  // namespace aln::dist
