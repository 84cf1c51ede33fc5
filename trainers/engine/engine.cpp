#include "trainers/engine/engine.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "absl/strings/str_format.h"
#include "trainers/engine/coordinator.h"
#include "trainers/engine/job_setup.h"
#include "trainers/engine/policy_worker.h"
#include "trainers/engine/process_context.h"
#include "trainers/engine/reference_role.h"
#include "trainers/engine/reward_role.h"
#include "trainers/engine/rollout_role.h"
#include "trainers/engine/text_encoder.h"

namespace aln::engine {

// A short dispatch: the process context says which role this process plays; each role runs on its own.
absl::StatusOr<JobReport> run_job(const aln::v1::JobSpec& spec, const RunOptions& options, const Logger& log,
                                  MetricsRegistry& metrics) {
  absl::Status supported = check_supported(spec);
  if (!supported.ok()) return supported;
  if (spec.runtime().threads() > 0) at::set_num_threads(spec.runtime().threads());
  auto encoder = load_text_encoder(spec.model().tokenizer(), spec.model().chat_format());
  if (!encoder.ok()) return encoder.status();
  auto process = make_process_context(spec, options, log);
  if (!process.ok()) return process.status();
  ProcessContext& p = **process;
  switch (p.role) {
    case dist::Role::kCoordinator:
      return run_coordinator(spec, p.coordinator_channel.get(), 1, p.timeout, log, metrics);
    case dist::Role::kReward: {
      absl::Status served = run_reward_role(spec, *p.reward_placement, p.role_index, log, metrics);
      if (!served.ok()) return served;
      return JobReport{};
    }
    case dist::Role::kReference: {
      absl::Status served = run_reference_role(spec, *p.remote_reference, p.role_index, log);
      if (!served.ok()) return served;
      return JobReport{};
    }
    case dist::Role::kRollout: {
      absl::Status served = run_rollout_role(*p.rollout_placement, p.role_index, log, metrics);
      if (!served.ok()) return served;
      return JobReport{};
    }
    case dist::Role::kPolicy:
      break;
  }
  PolicyWorker worker(spec, options, p, **encoder, log, metrics);
  return run_policy_worker(worker);
}

std::string format_report(const JobReport& report) {
  std::string out =
      absl::StrFormat("%-10s %-8s %-26s %10s %10s\n", "stage", "trainer", "held-out metric", "before", "after");
  for (const auto& s : report.stages) {
    for (const auto& [name, after] : s.after) {
      auto it = s.before.find(name);
      out += absl::StrFormat("%-10s %-8s %-26s %10.4f %10.4f\n", s.stage, s.trainer, name,
                             it == s.before.end() ? NAN : it->second, after);
    }
  }
  return out;
}

}  // namespace aln::engine
