#include "distributed/placement.h"

#include "absl/strings/str_cat.h"

namespace aln::dist {

std::string role_name(Role role) { return role == Role::kPolicy ? "policy" : "reference"; }

absl::StatusOr<Layout> plan_layout(const RoleGrid& policy, const RoleGrid& reference, bool separate,
                                   bool uses_reference, int world_size) {
  Layout layout;
  layout.separate = separate;
  layout.policy_ranks = policy.ranks();
  const std::string policy_text =
      absl::StrCat("parallel.policy is data_parallel ", policy.data_parallel, " x pipeline_parallel ",
                   policy.pipeline_parallel, " = ", policy.ranks(), " process(es)");
  if (!separate) {
    if (policy.ranks() != world_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(policy_text, " but the job runs on ", world_size, "; start it with `mpirun -np ", policy.ranks(),
                       " aln train JOB.yaml` or make data_parallel x pipeline_parallel equal ", world_size));
    }
    return layout;
  }
  if (reference.pipeline_parallel != 1) {
    return absl::UnimplementedError(
        "parallel.reference.pipeline_parallel: a reference on its own ranks runs unsplit for now; set it to 1");
  }
  if (!uses_reference) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.placement: separate, but no stage takes reference log-probs the reference ranks could "
                     "compute (dpo, safedpo); the ",
                     reference.ranks(), " reference rank(s) would idle. Use placement: colocated on ", policy.ranks(),
                     " process(es)"));
  }
  if (policy.pipeline_parallel != 1) {
    return absl::UnimplementedError(
        "parallel.placement: separate is not combined with a pipelined policy yet (pipelined jobs compute the "
        "reference through their own stages); set placement: colocated");
  }
  layout.reference_ranks = reference.ranks();
  if (layout.world() != world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.placement: separate needs ", policy.ranks(), " policy + ", reference.ranks(),
        " reference process(es) (parallel.reference.data_parallel) = ", layout.world(), ", but the job runs on ",
        world_size, "; start it with `mpirun -np ", layout.world(), " aln train JOB.yaml`",
        world_size == policy.ranks() ? absl::StrCat(", or set placement: colocated to run on ", world_size)
        : world_size > policy.ranks()
            ? absl::StrCat(", or set parallel.reference.data_parallel to ", world_size - policy.ranks())
            : ""));
  }
  return layout;
}

}  // namespace aln::dist
