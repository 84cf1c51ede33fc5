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

// Whether `op` on `stage` begins by receiving from a neighbour: a forward on every stage but the
// first (the previous stage's hidden states), a backward on every stage but the last (the next
// stage's gradient).
bool receives_first(const PipelineOp& op, int stages, int stage);

// One point-to-point message of a stage's step.
struct PipelineMessage {
  bool send = true;
  bool activation = true;  // a forward's hidden states (else a backward's gradient)
  int micro = 0;
  int peer = 0;  // the other stage
};

// The messages of `stage`'s step, in the order the stage posts them, in groups posted together: a
// pass's closing send (a forward's output to the next stage, a backward's gradient to the previous
// one) goes with the receive that opens the stage's next pass when that pass opens with one
// (receives_first), otherwise alone; a receive with no send before it is alone. The engine posts a
// group of two as one Communicator::send_recv. With every stage grouping so, two neighbours post
// the messages between them in matching groups in the same order, so a backend that runs each
// rank's groups one after another (NCCL on one stream) finishes every step; ungrouped, a 1F1B step
// of two or more micro-batches over two or more stages waits forever (GPipe's does not; tests/unit/dist/
// pipeline_schedule_test).
std::vector<std::vector<PipelineMessage>> pipeline_messages(PipelineSchedule schedule, int stages, int stage,
                                                            int micro_batches);

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
