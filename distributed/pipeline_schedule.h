#pragma once
// Pipeline parallelism, the parts that are pure arithmetic: how decoder layers are split into
// contiguous stages, and in which order each stage runs its micro-batches' forward and backward
// passes. The engine (trainers/engine/pipeline.*) executes these orders over the communicator.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aln::dist {

enum class PipelineSchedule {
  kGpipe,     // every forward, then every backward: m micro-batches of activations alive at once
  kOneFOneB,  // warm-up forwards, then one forward / one backward: at most (stages - stage) alive
};

struct PipelineOp {
  bool forward = true;
  int micro = 0;
};

// The order of `stage`'s passes in one step of `micro_batches` micro-batches. Backward passes run in
// micro-batch order in both schedules, so gradients accumulate in the same order and both give
// identical results.
std::vector<PipelineOp> pipeline_ops(PipelineSchedule schedule, int stages, int stage, int micro_batches);

// The bubble of an ideal pipeline with equal stage times: (p - 1) / (m + p - 1).
double theoretical_bubble(int stages, int micro_batches);

// Stage boundaries b[0] = 0 < b[1] < ... < b[stages] = layers.size(): stage s holds layers
// [b[s], b[s+1]). Contiguous, at least one layer each, minimising the largest stage's cost where
// a stage costs the sum of its layers plus `first_extra` (embedding) on the first and `last_extra`
// (final norm and head) on the last. Ties prefer earlier boundaries.
std::vector<int64_t> balance_stages(const std::vector<double>& layer_cost, double first_extra, double last_extra,
                                    int stages);

// Boundaries from an explicit layers-per-stage list (job spec `stage_layers`), checked against the
// model: InvalidArgument naming `where` when the count or the sum is wrong.
absl::StatusOr<std::vector<int64_t>> explicit_stages(const std::vector<int64_t>& layers_per_stage, int64_t layers,
                                                     int stages, const std::string& where);

}  // namespace aln::dist
