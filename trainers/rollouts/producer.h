#pragma once
// The rollout producer: samples what a generating trainer's plan (trainer.h's RolloutPlan) asks for,
// one micro-batch at a time, before the trainer's compute_loss reads it (StepContext::rollouts). The
// engine owns one per stage, so the trainer never generates: where the sampling runs (this process,
// or the rollout ranks through StepContext::generate / prefetch) and with which policy version (the
// bounded-staleness snapshot, kept here and saved with checkpoints) is decided here, not in a method.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model/decoder.h"
#include "trainers/policy_copy.h"
#include "trainers/rollouts/rollout.h"
#include "trainers/trainer.h"

namespace aln::trainers {

class RolloutProducer {
 public:
  // `copier` keeps the snapshot (whole, or sharded beside a fully sharded policy); `policy` is the
  // stage's policy, which a resumed snapshot is placed and computes like.
  RolloutProducer(RolloutPlan plan, std::shared_ptr<const PolicyCopier> copier, const model::DecoderModel* policy);

  const RolloutPlan& plan() const { return plan_; }

  // Samples `batch`'s rollouts for the step `ctx` describes and hands them to the trainer: sets
  // ctx.rollouts, and ctx.sampler when a snapshot sampled them. Training: the policy version is the
  // snapshot's when the plan allows staleness (renewed when it would be too old), else ctx.step; a
  // version's first micro-batch asks ahead for every one it serves (rollout ranks). Evaluation
  // (ctx.training false): on-policy, nothing asked ahead. Every rank of a fully sharded policy calls
  // it alike (the snapshot copy and the decoding passes are collective there).
  void produce(const std::vector<const buffer::Example*>& batch, StepContext& ctx);

  // The snapshot travels with checkpoints, so a resumed run samples what it would have. Called on
  // every policy rank before a checkpoint (a sharded snapshot is put together on rank 0), then
  // save_state on rank 0 writes it into the trainer's state directory.
  void before_save();
  absl::Status save_state(const std::string& dir) const;
  absl::Status load_state(const std::string& dir);

 private:
  RolloutPlan plan_;
  std::shared_ptr<const PolicyCopier> copier_;
  const model::DecoderModel* policy_;
  std::unique_ptr<PolicyCopy> sampler_;  // the snapshot that samples (max_staleness > 0)
  int64_t sampler_version_ = 0;
  int64_t asked_version_ = -1;                          // the sampling version whose rollouts were asked for
  mutable std::optional<model::DecoderModel> to_save_;  // a sharded snapshot, put together for a checkpoint
};

}  // namespace aln::trainers
