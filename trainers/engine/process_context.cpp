#include "trainers/engine/process_context.h"

#include <algorithm>

#include "core/config/job_config.h"

namespace aln::engine {
namespace {

// placement: separate, or rollout ranks. Every rank takes part in every split, in this order: its
// role's ranks; the policy's and the reference's ranks (the reference protocol's collectives); a
// channel for reward, rollout and per-step reference requests; rank 0 and the reference ranks
// (weights); with rollout ranks, each rollout rank and the policy rank that sends it weights.
void split_roles(const aln::v1::JobSpec& spec, ProcessContext& p, const Logger& log) {
  const dist::Layout& layout = p.layout;
  const dist::Role role = layout.role_of(p.world_rank);
  p.role = role;
  p.role_index = layout.index_in_role(p.world_rank);
  p.role_comm = p.world->split(static_cast<int>(role), p.world_rank, p.startup);
  p.frozen_comm = p.world->split(role == dist::Role::kReward ? 1 : role == dist::Role::kRollout ? 2 : 0, p.world_rank,
                                 p.startup);
  p.service_comm = p.world->split(0, p.world_rank, p.startup);
  const bool sends_or_takes_weights = p.world_rank == 0 || role == dist::Role::kReference;
  p.weights_comm = p.world->split(sends_or_takes_weights ? 0 : 1, p.world_rank, p.startup);
  // Rollout rank j and policy rank j, the first it serves, which sends it every policy version
  // (broadcasts from its rank 0); everyone else is in one unused group.
  int pair = 0;
  if (role == dist::Role::kPolicy && p.role_index < layout.rollout_ranks) pair = p.role_index + 1;
  if (role == dist::Role::kRollout && p.role_index < layout.policy_ranks) pair = p.role_index + 1;
  if (layout.rollout_ranks > 0) {
    p.rollout_weights_comm = p.world->split(pair, role == dist::Role::kRollout ? 1 : 0, p.startup);
  }
  // A server answers its policy ranks one at a time, so a request may wait behind one from each
  // of the others: its timeout grows with the clients per server.
  auto per_request = [&](int servers) {
    const int s = std::max(1, servers);
    return p.timeout * ((layout.policy_ranks + s - 1) / s);
  };
  p.reward_placement = RewardPlacement{p.service_comm.get(),
                                       layout.policy_ranks,
                                       layout.first_of(dist::Role::kReward),
                                       layout.reward_ranks,
                                       per_request(layout.reward_ranks),
                                       p.long_wait};
  if (layout.reference_ranks > 0) {
    const bool lead_reads = spec.parallel().data_reader() == aln::v1::LEAD && p.world_size > 1;
    p.remote_reference = RemoteReference{p.frozen_comm.get(),
                                         sends_or_takes_weights ? p.weights_comm.get() : nullptr,
                                         layout.reference_ranks,
                                         p.long_wait,
                                         p.service_comm.get(),
                                         layout.first_of(dist::Role::kReference),
                                         layout.policy_ranks,
                                         per_request(layout.reference_ranks),
                                         lead_reads};
  }
  if (layout.rollout_ranks > 0) {
    p.rollout_placement = RolloutPlacement{p.service_comm.get(),
                                           layout.policy_ranks,
                                           layout.first_of(dist::Role::kRollout),
                                           layout.rollout_ranks,
                                           per_request(layout.rollout_ranks),
                                           p.long_wait,
                                           p.own_coordinator ? 1 : 0,
                                           pair > 0 ? p.rollout_weights_comm.get() : nullptr};
  }
  if (role != dist::Role::kPolicy) return;
  p.policy_world = p.role_comm.get();
  // (Numbered as mpirun numbers them, the coordinator's own rank included.)
  const int shift = p.own_coordinator ? 1 : 0;
  if (layout.reference_ranks > 0) {
    log.info("placement separate: the reference runs on world ranks %d..%d",
             shift + layout.first_of(dist::Role::kReference), shift + layout.first_of(dist::Role::kReward) - 1);
  }
  if (layout.reward_ranks > 0) {
    log.info(
        "placement separate: the reward models run on world ranks %d..%d (policy rank r asks world rank %d + r %% "
        "%d)",
        shift + layout.first_of(dist::Role::kReward), shift + layout.first_of(dist::Role::kRollout) - 1,
        shift + layout.first_of(dist::Role::kReward), layout.reward_ranks);
  }
  if (layout.rollout_ranks > 0) {
    log.info("rollout ranks: generation runs on world ranks %d..%d (policy rank r asks world rank %d + r %% %d)",
             shift + layout.first_of(dist::Role::kRollout), shift + layout.world() - 1,
             shift + layout.first_of(dist::Role::kRollout), layout.rollout_ranks);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessContext>> make_process_context(const aln::v1::JobSpec& spec,
                                                                     const RunOptions& options, const Logger& log) {
  auto p = std::make_unique<ProcessContext>();
  p->timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.parallel().timeout_s() * 1000));
  p->startup = config::startup_timeout(spec);
  // Reading or preparing data, loading a model or computing a whole cache on another rank may take long.
  p->long_wait = std::max(p->timeout, std::chrono::milliseconds(30 * 60 * 1000));
  // Roles: the policy's grid, then (placement: separate) the reference's ranks and the reward
  // models' ranks. Checked before anything is loaded.
  const config::SeparateRoles roles = config::separate_roles(spec);
  const aln::v1::GridSpec& grid = spec.parallel().policy();
  const auto& ref_grid = spec.parallel().reference();
  const auto& reward_grid = spec.parallel().reward();
  p->own_coordinator = spec.parallel().coordinator() == aln::v1::OWN_RANK;
  auto layout = dist::plan_layout(
      {grid.data_parallel(), grid.pipeline_parallel()}, {ref_grid.data_parallel(), ref_grid.pipeline_parallel()},
      {reward_grid.data_parallel(), reward_grid.pipeline_parallel()}, spec.parallel().placement() == aln::v1::SEPARATE,
      {roles.reference, roles.reward, p->own_coordinator, spec.parallel().rollout().ranks()}, options.comm != nullptr ? options.comm->size() : 1);
  if (!layout.ok()) return layout.status();
  p->layout = *layout;
  // With a coordinator of its own, world rank 0 only serves the policy's first rank (world rank 1);
  // the other ranks run the job on a communicator without it, numbered from 0 as usual.
  p->world = options.comm;
  if (p->own_coordinator) {
    const bool coordinator = options.comm->rank() == 0;
    p->coordinator_channel = options.comm->split(0, options.comm->rank(), p->startup);
    p->workers = options.comm->split(coordinator ? 1 : 0, options.comm->rank(), p->startup);
    if (coordinator) {
      p->role = dist::Role::kCoordinator;
      return p;
    }
    p->world = p->workers.get();
    p->layout = p->layout.workers();
  }
  p->world_size = p->world != nullptr ? p->world->size() : 1;
  p->world_rank = p->world != nullptr ? p->world->rank() : 0;
  p->policy_world = p->world;
  if (p->layout.split()) split_roles(spec, *p, log);
  return p;
}

}  // namespace aln::engine
