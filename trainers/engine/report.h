#pragma once
// What a job reports: held-out numbers per stage before and after training. Kept apart from the
// engine so checkpoints can carry the reports of stages already finished.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace aln::engine {

using MetricMap = std::map<std::string, double>;

struct StageReport {
  std::string stage;
  std::string trainer;
  MetricMap before;
  MetricMap after;
  int64_t steps = 0;
  double seconds = 0;
};

struct JobReport {
  std::vector<StageReport> stages;
  std::string final_model_dir;
  std::string resumed_from;  // checkpoint directory, when the run resumed
};

// The before/after table, one row per stage and metric.
std::string format_report(const JobReport& report);

}  // namespace aln::engine
