#include "distributed/placement.h"

#include "absl/strings/str_cat.h"

namespace aln::dist {

std::string role_name(Role role) {
  return role == Role::kPolicy      ? "policy"
         : role == Role::kReference ? "reference"
         : role == Role::kReward    ? "reward"
         : role == Role::kRollout   ? "rollout"
                                    : "coordinator";
}

absl::StatusOr<Layout> plan_layout(const RoleGrid& policy, const RoleGrid& reference, const RoleGrid& reward,
                                   bool separate, RoleUse use, int world_size) {
  Layout layout;
  layout.separate = separate;
  layout.policy_ranks = policy.ranks();
  const int c = use.coordinator ? 1 : 0;
  layout.coordinator = c;
  const std::string policy_text = absl::StrCat(
      "parallel.policy is data_parallel ", policy.data_parallel, " x pipeline_parallel ", policy.pipeline_parallel,
      " = ", policy.ranks(), " process(es)", c ? " plus 1 for the coordinator (parallel.coordinator: own_rank)" : "");
  const int k = use.rollout;
  if (k > 0 && policy.pipeline_parallel != 1) {
    return absl::UnimplementedError(
        "parallel.rollout.ranks: rollout ranks serve unsplit policies for now; set parallel.policy.pipeline_parallel "
        "to 1 or rollout.ranks to 0");
  }
  if (k > policy.ranks()) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.rollout.ranks is ", k, " but each rollout rank serves at "
                                                   "least one of the ", policy.ranks(),
                                                   " policy rank(s); set it to at most ", policy.ranks()));
  }
  layout.rollout_ranks = k;
  if (!separate) {
    if (policy.ranks() + c + k != world_size) {
      std::string fit = world_size > c + k ? absl::StrCat(" or make data_parallel x pipeline_parallel equal ",
                                                          world_size - c - k)
                                           : "";
      return absl::InvalidArgumentError(
          absl::StrCat(policy_text, k > 0 ? absl::StrCat(" plus ", k, " rollout rank(s) (parallel.rollout.ranks)") : "",
                       " but the job runs on ", world_size, "; start it with `mpirun -np ", policy.ranks() + c + k,
                       " aln train JOB.yaml`", fit));
    }
    return layout;
  }
  if (use.reference && reference.pipeline_parallel != 1) {
    return absl::UnimplementedError(
        "parallel.reference.pipeline_parallel: a reference on its own ranks runs unsplit for now; set it to 1");
  }
  if (use.reward && reward.pipeline_parallel != 1) {
    return absl::UnimplementedError(
        "parallel.reward.pipeline_parallel: reward models on their own ranks run unsplit for now; set it to 1");
  }
  if (!use.reference && !use.reward) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.placement: separate, but no stage takes reference log-probs the reference ranks could "
        "compute (dpo, safedpo, tdpo, radpo, grpo with beta > 0, controllable contrastive or rl with rl_beta > 0, "
        "hair with beta > 0 or without an encoder of its own) and no stage lists reward_models; the frozen roles' "
        "ranks would idle. "
        "Use placement: colocated on ",
        policy.ranks() + c + k, " process(es)"));
  }
  if (use.reward && reward.data_parallel > policy.ranks()) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.reward.data_parallel is ", reward.data_parallel,
                                                   " but each reward rank serves at least one of the ", policy.ranks(),
                                                   " policy rank(s); set it to at most ", policy.ranks()));
  }
  layout.reference_ranks = use.reference ? reference.ranks() : 0;
  layout.reward_ranks = use.reward ? reward.ranks() : 0;
  if (layout.world() != world_size) {
    std::string parts = absl::StrCat(c ? "1 coordinator + " : "", policy.ranks(), " policy");
    if (use.reference) absl::StrAppend(&parts, " + ", reference.ranks(), " reference");
    if (use.reward) absl::StrAppend(&parts, " + ", reward.ranks(), " reward");
    if (k > 0) absl::StrAppend(&parts, " + ", k, " rollout");
    std::string keys = use.reference && use.reward ? "parallel.reference.data_parallel, parallel.reward.data_parallel"
                       : use.reference             ? "parallel.reference.data_parallel"
                                                   : "parallel.reward.data_parallel";
    std::string other;
    if (world_size == policy.ranks() + c + k) {
      other = absl::StrCat(", or set placement: colocated to run on ", world_size);
    } else if (world_size > policy.ranks() + c + k && use.reference != use.reward) {
      other = absl::StrCat(", or set ", keys, " to ", world_size - policy.ranks() - c - k);
    }
    return absl::InvalidArgumentError(absl::StrCat("parallel.placement: separate needs ", parts, " process(es) (", keys,
                                                   ") = ", layout.world(), ", but the job runs on ", world_size,
                                                   "; start it with `mpirun -np ", layout.world(),
                                                   " aln train JOB.yaml`", other));
  }
  return layout;
}

}  // namespace aln::dist
