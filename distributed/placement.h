#pragma once
// Where each role of a job runs. The world is the coordinator's own rank (parallel.coordinator:
// own_rank; otherwise the policy's first rank coordinates), the policy's grid (data_parallel x
// pipeline_parallel ranks) followed, with placement `separate`, by the reference's ranks (when some
// stage takes reference log-probs they can compute) and then the reward models' ranks (when some
// stage lists reward models), then the rollout ranks (parallel.rollout.ranks, with either placement). The layout is checked against the processes mpirun started before
// anything is loaded; an impossible one is refused with what would fit.
#include <string>

#include "absl/status/statusor.h"

namespace aln::dist {

enum class Role { kPolicy, kReference, kReward, kCoordinator, kRollout };

struct RoleGrid {
  int data_parallel = 1;
  int pipeline_parallel = 1;
  int ranks() const { return data_parallel * pipeline_parallel; }
};

struct Layout {
  bool separate = false;
  int coordinator = 0;  // 1: world rank 0 is the coordinator alone
  int policy_ranks = 1;
  int reference_ranks = 0;  // separate only
  int reward_ranks = 0;     // separate only
  int rollout_ranks = 0;    // either placement
  int world() const { return coordinator + policy_ranks + reference_ranks + reward_ranks + rollout_ranks; }
  // Roles other than the policy's run on ranks of their own: the world is split into roles.
  bool split() const { return separate || rollout_ranks > 0; }
  int first_of(Role role) const {
    return role == Role::kCoordinator ? 0
           : role == Role::kPolicy    ? coordinator
           : role == Role::kReference ? coordinator + policy_ranks
           : role == Role::kReward    ? coordinator + policy_ranks + reference_ranks
                                      : coordinator + policy_ranks + reference_ranks + reward_ranks;
  }
  Role role_of(int world_rank) const {
    return world_rank < coordinator                                                   ? Role::kCoordinator
           : world_rank < coordinator + policy_ranks                                  ? Role::kPolicy
           : world_rank < coordinator + policy_ranks + reference_ranks                ? Role::kReference
           : world_rank < coordinator + policy_ranks + reference_ranks + reward_ranks ? Role::kReward
                                                                                      : Role::kRollout;
  }
  // The same roles without the coordinator's rank: the ranks the coordinator serves, numbered from 0.
  Layout workers() const {
    Layout w = *this;
    w.coordinator = 0;
    return w;
  }
  // Index of a world rank within its role's ranks.
  int index_in_role(int world_rank) const { return world_rank - first_of(role_of(world_rank)); }
};

// What the job's stages ask of the frozen roles.
struct RoleUse {
  bool reference = false;    // some stage takes reference log-probs the reference ranks can compute (per-pair sums)
  bool reward = false;       // some stage lists reward models
  bool coordinator = false;  // parallel.coordinator: own_rank
  int rollout = 0;           // parallel.rollout.ranks
};

// `world_size`: processes started. Errors name the keys and the mpirun -np that fits.
absl::StatusOr<Layout> plan_layout(const RoleGrid& policy, const RoleGrid& reference, const RoleGrid& reward,
                                   bool separate, RoleUse use, int world_size);

std::string role_name(Role role);

}  // namespace aln::dist
