#pragma once
// One optimizer step of a stage, in the order the engine runs it: the micro-batches' forward and
// backward passes (local, or through the pipeline's schedule), the sums over data-parallel ranks,
// the update (clip, schedule, non-finite guard, AdamW), the report (Prometheus + JSONL) and, every
// checkpoint.every_steps, the checkpoint. Each function owns one of these.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "trainers/engine/overlap.h"
#include "trainers/engine/policy_worker.h"
#include "trainers/engine/report.h"
#include "trainers/engine/stage_runner.h"

namespace aln::engine {

struct StepResult {
  // Read from `scalars` once per step (update_policy), after the gradient norm joins them:
  double loss = 0;  // weighted mean over the step's micro-batches (and, once summed, ranks)
  int64_t tokens = 0, samples = 0;
  MetricMap metrics;  // the trainer's scalars, averaged
  int64_t local_tokens = 0;  // this rank's own
  // Until then the step's numbers stay where they were computed: the weighted loss and the
  // trainer's tensor metrics (float64, on the compute device), the host ones beside them.
  at::Tensor loss_sum;
  std::map<std::string, at::Tensor> device_metrics;
  MetricMap host_metrics;
  // sum_over_ranks packs them into one float64 tensor (summed over ranks): [loss, tokens, samples,
  // metrics in `scalar_names` order].
  at::Tensor scalars;
  std::vector<std::string> scalar_names;
  std::vector<double> rank_peak_rss;  // the lead's: every data-parallel rank's peak resident bytes
  int host_reads = 0;  // device-to-host copies the engine made in this step (1; a test checks)
  double data_s = 0, forward_s = 0, backward_s = 0, communication_s = 0, optimizer_s = 0;
  double grad_norm = 0, lr = 0;
  bool finite = true;  // false: the update was skipped
  // parallel.overlap: the gradient sums started during the last backward, finished by sum_over_ranks.
  std::unique_ptr<OverlappedGradientSum> overlapped;
};

// This process's resident memory now (/proc/self/statm), in bytes; 0 where it cannot be read.
double resident_bytes();

// The step's micro-batches, forward and backward; gradients accumulate in the policy.
StepResult run_passes(PolicyWorker& w, StageRun& s, int64_t step);
// Gradients and the step's numbers summed over the data-parallel ranks (as tensors: nothing read).
void sum_over_ranks(PolicyWorker& w, StageRun& s, StepResult& r);
// The step's one read (with the gradient norm), per-rank gauges, clipping, learning rate, the
// non-finite guard, AdamW, the trainer's after_step. Errors: too many non-finite steps in a row.
absl::Status update_policy(PolicyWorker& w, StageRun& s, int64_t step, StepResult& r);
// Metrics and the train log line of step `step` (0-based) that took `seconds`.
absl::Status report_step(PolicyWorker& w, StageRun& s, int64_t step, const StepResult& r, double seconds);
// A checkpoint after step `step` (0-based), written by the lead; every rank learns whether it worked.
absl::Status save_checkpoint(PolicyWorker& w, StageRun& s, int64_t step);

}  // namespace aln::engine
