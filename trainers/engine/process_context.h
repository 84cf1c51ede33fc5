#pragma once
// Which part of a job this process plays, and the communicators it plays it on. Made once at the
// start of run_job: the world is split into the coordinator's channel (parallel.coordinator:
// own_rank), then (placement: separate, or rollout ranks) the roles' groups; every rank takes part in every split,
// in one fixed order, before any of them loads anything. run_job then hands the process to its
// role: the coordinator, a reference, reward or rollout server, or a policy worker.
#include <chrono>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "distributed/communicator.h"
#include "distributed/placement.h"
#include "trainers/engine/engine.h"
#include "trainers/engine/reference_role.h"
#include "trainers/engine/reward_role.h"
#include "trainers/engine/rollout_role.h"

namespace aln::engine {

struct ProcessContext {
  dist::Role role = dist::Role::kPolicy;
  int role_index = 0;  // this process's index among its role's ranks
  dist::Layout layout;
  bool own_coordinator = false;
  // The job's waits: one collective or request; start-up splits; loading or preparing on a peer.
  std::chrono::milliseconds timeout{0}, startup{0}, long_wait{0};

  // The world without the coordinator's own process (numbered from 0 as usual), and the policy's
  // ranks in it (the whole world unless placement is separate).
  dist::Communicator* world = nullptr;
  dist::Communicator* policy_world = nullptr;
  int world_rank = 0;
  int world_size = 1;
  std::unique_ptr<dist::Communicator> coordinator_channel;  // world rank 0 and the policy's first rank
  std::optional<RemoteReference> remote_reference;          // reference ranks (placement: separate)
  std::optional<RewardPlacement> reward_placement;          // reward ranks (placement: separate)
  std::optional<RolloutPlacement> rollout_placement;        // rollout ranks (parallel.rollout.ranks)

  // Owned communicators behind the pointers above.
  std::unique_ptr<dist::Communicator> workers, role_comm, frozen_comm, service_comm, weights_comm, rollout_weights_comm;
};

// Splits the world as the job's layout asks (a collective of every rank) and says what this process
// is. Errors: an impossible layout (before any split).
absl::StatusOr<std::unique_ptr<ProcessContext>> make_process_context(const aln::v1::JobSpec& spec,
                                                                     const RunOptions& options, const Logger& log);

}  // namespace aln::engine
