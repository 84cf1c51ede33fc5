#pragma once
// The launcher's pre-flight memory check: a lower bound on what each policy rank of a job holds for
// training, compared with what one slot of the pool offers (--slot-memory-gib). A lower bound on
// purpose: it counts only the policy's training state (weights, gradients, AdamW's two float32
// moments), not activations, the reference or reward models, so a job it refuses cannot fit, and a
// job it accepts may still run out (docs/scaling.md plans the rest).
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"

namespace aln::launcher {

struct PolicyStateEstimate {
  int64_t parameters = 0;
  double bytes_per_rank = 0;
  std::string breakdown;  // how bytes_per_rank was formed, for messages
};

// From the job's model (model.config, or config.json in model.path, relative paths against
// `reads_from`) and its parallel settings (parallel.policy.shard divides the moments by the
// data-parallel ranks; pipeline stages divide everything by their count, the mean stage).
absl::StatusOr<PolicyStateEstimate> policy_state_per_rank(const aln::v1::JobSpec& spec, const std::string& reads_from);

// OK when `slot_bytes` is 0 (no check) or the estimate fits; otherwise InvalidArgument naming the
// key to change and the numbers.
absl::Status check_policy_fits(const PolicyStateEstimate& estimate, double slot_bytes, const aln::v1::JobSpec& spec);

}  // namespace aln::launcher
