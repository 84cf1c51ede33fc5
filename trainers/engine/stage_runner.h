#pragma once
// One stage of a job on a policy rank: its trainer, reward models, data and reference, evaluation
// before and after, and the step loop, each step built from the pieces of train_step.h (one
// schedule: run the micro-batches, sum gradients, update, report, checkpoint). The trainer plugin
// only computes losses; everything about when and where runs here.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/buffer/buffer.h"
#include "core/model/decoder.h"
#include "trainers/engine/evaluate.h"
#include "trainers/engine/overlap.h"
#include "trainers/engine/policy_worker.h"
#include "trainers/engine/reference_role.h"
#include "trainers/engine/rollout_dump.h"
#include "trainers/engine/sharded_adamw.h"
#include "trainers/engine/stage_setup.h"
#include "trainers/rollouts/producer.h"
#include "trainers/trainer.h"

namespace aln::engine {

// How this stage reaches its frozen reference (reference_provider.cpp).
struct StageReference {
  std::optional<model::DecoderModel> model;        // kept on the fly (or for checkpoints), else dropped
  // On the fly beside a fully sharded policy: `model`'s parameters, sharded the same way (its map
  // then holds placeholders, gathered a layer at a time by its passes). Declared after `model`,
  // so it detaches before the model goes.
  std::unique_ptr<FullySharded> sharded;
  std::string cache_key;                           // cached log-probs: the cache the stage's examples carry
  bool remote_each_step = false;                   // the reference ranks answer per-step requests
  at::Tensor head;                                 // hidden-state trainers: the reference's output projection
  const model::DecoderModel* for_steps = nullptr;  // the model trainers reach in this process, if any
  // What trainers get as StepContext::reference: `for_steps`, or the reference ranks each step.
  std::shared_ptr<const trainers::Reference> for_trainers;
  const model::DecoderModel* to_save = nullptr;    // saved with checkpoints (exists nowhere else)
};

struct StageRun {
  explicit StageRun(const aln::v1::StageSpec& stage) : spec(stage) {}
  const aln::v1::StageSpec& spec;
  size_t index = 0;
  std::string name, method;
  bool resuming = false;  // the checkpoint we resume from was taken inside this stage
  std::unique_ptr<trainers::Trainer> trainer;
  trainers::Needs needs;
  Labels labels;

  std::vector<model::DecoderModel> reward_models;
  std::vector<std::unique_ptr<trainers::RewardModel>> reward_scorers;
  std::vector<const trainers::RewardModel*> reward_ptrs;
  std::optional<PreparedStage> prepared;
  StageReference reference;
  trainers::StepContext extras;  // what every StepContext of the stage shares
  // Samples the trainer's rollouts before each training micro-batch's loss (methods that declare a
  // RolloutPlan; null for the others).
  std::unique_ptr<trainers::RolloutProducer> producer;

  StageReport report;
  std::optional<buffer::Buffer> buffer;
  int64_t total_steps = 0;
  std::optional<ShardedAdamW> adamw;
  int64_t first_step = 0;
  int64_t consecutive_bad = 0;     // non-finite steps in a row
  double start_rss_bytes = 0;      // resident memory as the first step began (train_log: what training adds)
  GradientReadyOrder ready_order;  // learnt on the stage's first overlapped step
  std::shared_ptr<RolloutDump> rollouts;  // rollouts: {dump: true}
  double rollout_waited = 0;              // the rollout rank's waits counted in earlier steps' lines

  StageData& data() { return prepared->data; }
  // The StepContext of optimizer step `step` (the one place it is filled).
  trainers::StepContext step_context(const PolicyWorker& w, int64_t step) const;
};

// Runs stage `index` of the job (resuming inside it when the checkpoint says so).
absl::Status run_stage(PolicyWorker& w, const aln::v1::StageSpec& stage, size_t index);

// The reference for the stage: cached log-probs computed (or read) up front, the model kept for
// passes on the fly, or the reference ranks set up to answer each step.
absl::Status provide_reference(PolicyWorker& w, StageRun& s);

// Held-out metrics of the policy now (sharded like the trainer's passes).
MetricMap evaluate_stage(PolicyWorker& w, StageRun& s);

}  // namespace aln::engine
