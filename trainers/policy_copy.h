#pragma once
// Frozen copies of the policy's weights, for sampling with an older policy version (the rollout
// producer's bounded-staleness snapshot, trainers/rollouts/producer.h). Who makes them decides how they are kept: whole
// in this process (whole_policy_copier(), the default), or, beside a fully sharded policy, sharded the same way (the
// engine's, trainers/engine/sharded_copy.h), so that no rank keeps the copy whole between checkpoints. Users see only a
// model to run passes with; with a sharded copy every rank runs the same passes in the same order, as with the sharded
// policy itself.
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/decoder.h"

namespace aln::trainers {

class PolicyCopy {
 public:
  virtual ~PolicyCopy() = default;
  // The copy, for forward passes (no gradients).
  virtual const model::DecoderModel& model() const = 0;
  // What a checkpoint saves, put together: a copy kept whole needs nothing (nullopt: save model()'s
  // tensors); a sharded one gathers its weights on data-parallel rank 0, one layer at a time
  // (collective: every rank calls it; the others get nullopt).
  virtual std::optional<model::DecoderModel> gather_on_lead() const { return std::nullopt; }
};

class PolicyCopier {
 public:
  virtual ~PolicyCopier() = default;
  // A copy of `policy`'s weights as they are now, computing as `policy` does (a copy kept whole is
  // stored in the policy's compute dtype: under bf16 mixed precision, half the memory, the same bits).
  virtual std::unique_ptr<PolicyCopy> copy(const model::DecoderModel& policy) const = 0;
  // A copy of weights a checkpoint saved (the safetensors file `path`, model `config`; other tensors
  // in it are ignored), placed and computing as `policy` does. A sharded copier has every rank read
  // only its own ranges (collective; a read that fails anywhere fails everywhere).
  virtual absl::StatusOr<std::unique_ptr<PolicyCopy>> read(const std::string& path, const model::ModelConfig& config,
                                                           const model::DecoderModel& policy) const = 0;
  // Before a collective read: every rank learns whether every rank may go on. `local` is this rank's
  // verdict; the result is it, or an error naming `what` when another rank's failed. (Whole copies:
  // `local`.)
  virtual absl::Status agree(const absl::Status& local, const std::string& what) const { return local; }
};

// Copies kept whole in this process.
std::shared_ptr<const PolicyCopier> whole_policy_copier();

}  // namespace aln::trainers
