#pragma once
// The training engine: runs a job's stages in order, each with its trainer plugin, owning batching,
// gradient accumulation, AdamW with warm-up + schedule, clipping, the non-finite-step guard,
// reference log-probs (cached or on the fly), periodic evaluation, metrics and checkpoints.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/metrics.h"

namespace aln::engine {

enum class Resume { kNo, kFromLatest };

struct RunOptions {
  Resume resume = Resume::kNo;
  // Stop after this many optimizer steps in total (0 = run the whole job); used by tests to
  // simulate an interrupted run.
  int64_t stop_after_steps = 0;
};

// Evaluation numbers of one stage, before and after training (printed as a table at the end).
struct StageReport {
  std::string stage;
  std::string trainer;
  std::map<std::string, double> before;
  std::map<std::string, double> after;
  int64_t steps = 0;
  double seconds = 0;
};

struct JobReport {
  std::vector<StageReport> stages;
  std::string final_model_dir;
};

absl::StatusOr<JobReport> run_job(const aln::v1::JobSpec& spec, const RunOptions& options, const Logger& log,
                                  MetricsRegistry& metrics);

// The before/after table, one row per stage and metric.
std::string format_report(const JobReport& report);

}  // namespace aln::engine
