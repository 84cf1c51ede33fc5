#pragma once
// Frozen copies of a fully sharded policy, sharded the same way (a trainers::PolicyCopier): the
// rollout producer's bounded-staleness snapshot (GRPO's max_staleness) beside parallel.policy.shard: full.
// A copy takes this rank's ranges of the policy's shards (nothing is gathered: 1/N of the model per
// rank, instead of a whole copy on every rank); its passes gather a layer at a time as the policy's do
// (the outer unit, head and tied embedding, stays gathered from one pass to the next, as the
// policy's does), so every rank samples and scores with it in step. A checkpoint puts it together
// on rank 0 (whole there, briefly); a resume has every rank read back only its own ranges of it.
#include <memory>
#include <string>

#include "trainers/engine/data_parallel.h"
#include "trainers/engine/fully_sharded.h"
#include "trainers/policy_copy.h"

namespace aln::engine {

class ShardedPolicyCopier final : public trainers::PolicyCopier {
 public:
  // `policy`: the stage's fully sharded policy; both must outlive the copier and its copies.
  ShardedPolicyCopier(const DataParallel& dp, const FullySharded& policy, bool deterministic)
      : dp_(dp), policy_(policy), deterministic_(deterministic) {}

  std::unique_ptr<trainers::PolicyCopy> copy(const model::DecoderModel& policy) const override;
  absl::StatusOr<std::unique_ptr<trainers::PolicyCopy>> read(const std::string& path, const model::ModelConfig& config,
                                                             const model::DecoderModel& policy) const override;
  absl::Status agree(const absl::Status& local, const std::string& what) const override;

 private:
  const DataParallel& dp_;
  const FullySharded& policy_;
  bool deterministic_;
};

}  // namespace aln::engine
