#pragma once
// The reward models on ranks of their own (parallel.placement: separate, a stage lists
// reward_models). The world is the policy's ranks, then the reference's (when it has ranks), then
// the reward ranks; policy rank i is served by reward rank i % reward_ranks. As a stage starts its
// policy ranks ask their reward rank to load the stage's reward models ("load"); trainers then
// score through stand-ins that send input ids and attention masks and get scores back ("score"),
// computed by the same code a colocated run uses, so scores are bit-identical. When the job ends
// well the policy ranks say goodbye and the reward ranks leave. Messages are aln.v1.ServiceRequest /
// ServiceReply on a communicator of their own; every wait is bounded (an idle reward rank waits for
// requests without limit: the heartbeat monitor watches it, and mpirun ends it with the job).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "distributed/communicator.h"
#include "distributed/service.h"
#include "trainers/trainer.h"

namespace aln::engine {

struct RewardPlacement {
  dist::Communicator* channel = nullptr;  // every rank of the job, for service messages only
  int policy_ranks = 1;
  int first_reward_rank = 1;
  int reward_ranks = 1;
  std::chrono::milliseconds timeout{0};       // one score request, there and back
  std::chrono::milliseconds load_timeout{0};  // loading a stage's models
  int server_of(int policy_rank) const { return first_reward_rank + policy_rank % reward_ranks; }
};

// Policy side: this policy rank's connection to its reward rank.
class RemoteRewards {
 public:
  RemoteRewards(const RewardPlacement& placement, int policy_rank);
  // Has the reward rank load stage `stage`'s reward models; stand-ins for them, in the order listed.
  absl::StatusOr<std::vector<std::unique_ptr<trainers::RewardModel>>> open_stage(int64_t stage,
                                                                                 const aln::v1::StageSpec& spec);
  // The job ended well: the reward rank may leave.
  absl::Status finish();
  int server() const { return client_.server(); }

 private:
  RewardPlacement placement_;
  mutable dist::ServiceClient client_;
};

// Reward side: the whole role for a job (`index` among the reward ranks). Counts requests and
// scored sequences in `metrics` (they reach rank 0's /metrics with the heartbeats).
absl::Status run_reward_role(const aln::v1::JobSpec& spec, const RewardPlacement& placement, int index,
                             const Logger& log, MetricsRegistry& metrics);

}  // namespace aln::engine
