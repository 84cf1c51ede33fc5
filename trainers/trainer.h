#pragma once
// The trainer plugin contract. A trainer says what it needs, may transform the stage's examples once
// (prepare), and computes a loss from a batch of Buffer examples; the engine owns everything else
// (batching, gradient accumulation, optimizer, clipping, schedule, reference log-probs,
// checkpoints, metrics export, evaluation cadence, data/pipeline parallelism).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/buffer/buffer.h"
#include "core/buffer/rollout_record.h"
#include "core/model/decoder.h"
#include "core/model/generation.h"
#include "core/registry.h"
#include "trainers/metric_value.h"
#include "trainers/reference.h"
#include "trainers/reward_model.h"

namespace aln::trainers {

enum class RecordKind { kSequences, kPreferencePairs, kPrompts };

struct RolloutBatch;  // trainers/rollouts/rollout.h
class LearnedModelMaker;  // trainers/learned_model.h

// What a generating trainer's steps sample from the policy (GRPO, HAIR, the controllable method's
// rl objective). The trainer only declares it: the engine's producer (trainers/rollouts/producer.h)
// samples each micro-batch's rollouts before compute_loss, in this process or on the rollout ranks,
// and the trainer reads them from StepContext::rollouts. group_size 0: the steps sample nothing.
struct RolloutPlan {
  int64_t group_size = 0;               // responses sampled per prompt
  model::GenerationOptions generation;  // max_new_tokens, temperature, top_k, top_p (the rest is the producer's)
  // Training steps sample with a snapshot of the policy at most this many versions old, renewed
  // when it would be older (GRPO's bounded staleness); 0: on-policy. Evaluation samples on-policy.
  int64_t max_staleness = 0;
};
enum class ModelHead { kLanguageModel, kScore };

// What a trainer asks of the frozen reference (trainers::Reference). The engine chooses how each
// is answered from this list alone: per-pair sums are cached in the examples up front (or computed
// on the fly, reference.mode), the others come each step from the reference in this process or from
// the reference's own ranks (placement: separate). An empty list loads no reference.
enum class ReferenceQuery {
  kPairSums,            // per-pair response log-prob sums (Example::reference_chosen / _rejected)
  kTokenLogprobs,       // per-token log-probs of sequences the step makes (Reference::token_logprobs)
  kHiddenStates,        // final hidden states and the output projection (full distributions: TDPO, Ra-DPO)
  kSentenceEmbeddings,  // mean-pooled final hidden states (Reference::sentence_embeddings; HAIR's encoder)
};

// What a trainer asks of the engine.
struct Needs {
  RecordKind records = RecordKind::kSequences;
  ModelHead head = ModelHead::kLanguageModel;
  std::vector<ReferenceQuery> reference;

  bool asks(ReferenceQuery query) const {
    for (ReferenceQuery q : reference)
      if (q == query) return true;
    return false;
  }
  // The reference is asked during steps, not only before the stage (anything but pair sums).
  bool reference_each_step() const {
    for (ReferenceQuery q : reference)
      if (q != ReferenceQuery::kPairSums) return true;
    return false;
  }
};

struct PrepareContext {
  const aln::v1::StageSpec* stage = nullptr;
  std::vector<buffer::Example>* examples = nullptr;  // may be filtered or rewritten in place
  std::map<std::string, double>* counters =
      nullptr;  // exported as aln_data_records{outcome=<name>} (train set; e.g. swaps)
  // For trainers that build their data with the model (PT-ALIGN's self-generation); may be unset.
  bool training_set = true;                                                 // false for the held-out set
  const model::DecoderModel* policy = nullptr;                              // the policy as the stage starts
  // A whole copy of `policy`, for trainers that build models from its tensors (HAIR's shadow reward
  // models): a fully sharded policy's own tensors are placeholders outside its passes. Collective
  // then (every rank calls it alike). Unset: `policy` is whole.
  std::function<model::DecoderModel()> whole_policy;
  // Keeps the models a trainer learns beside the policy (HAIR's shadow reward models): sharded as the
  // policy is beside a fully sharded one (their passes collective then). Unset: whole in this process.
  std::shared_ptr<const LearnedModelMaker> learned_models;
  std::function<std::vector<int64_t>(const std::string&)> encode_prompt;    // text -> prompt ids (chat format)
  std::function<std::vector<int64_t>(const std::string&)> encode_response;  // text -> response ids (+ end id)
  std::function<std::vector<int64_t>(const std::string&)> encode_text;      // plain text -> ids
  std::function<std::string(const std::vector<int64_t>&)> decode;
  int64_t eos_id = -1;
  int64_t pad_id = 0;
  uint64_t seed = 0;
  std::string work_dir;   // where the trainer may keep what it built (<output_dir>/<stage>)
  bool lead = true;       // this rank writes files
  bool resuming = false;  // the stage resumes from a checkpoint: reuse what was built, do not rebuild
  std::vector<const RewardModel*> reward_models;  // the stage's, in the order listed
};

struct StepContext {
  const model::DecoderModel* policy = nullptr;
  // The frozen reference, when the trainer's needs ask for it each step (not cached in the
  // examples): in this process or on ranks of its own, which the trainer cannot tell (reference.h).
  std::shared_ptr<const Reference> reference;
  int64_t pad_id = 0;
  int64_t step = 0;  // the policy version: optimizer steps taken in this stage
  // For rollout-based trainers (GRPO): ids -> text (rule rewards), the end-of-response id, the job's
  // seed (sampling seeds derive from it, the step and the prompts, so runs and resumes repeat), and
  // the stage's reward models (score heads).
  std::function<std::string(const std::vector<int64_t>&)> decode;
  int64_t eos_id = -1;
  uint64_t seed = 0;
  std::vector<const RewardModel*> reward_models;
  std::function<std::vector<int64_t>(const std::string&)> encode_text;  // plain text -> ids
  // false in evaluation: trainers that learn besides the policy (HAIR's shadow reward models) only
  // learn from training steps.
  bool training = true;
  // The policy's data-parallel group, for trainers with state of their own to keep equal on every
  // rank; unset in one process (the identity). `sum` adds a tensor over ranks in place;
  // `sum_gradients` adds the gradients of named parameters over ranks (missing ones count as
  // zeros) in the engine's reduction order, so ranks stay identical to one process accumulating them.
  std::function<void(at::Tensor&)> sum;
  std::function<void(std::map<std::string, at::Tensor>&)> sum_gradients;
  // Where a generating trainer hands what it sampled in a training step (publish_rollouts in
  // trainers/rollouts/rollout.h); unset when the job keeps no rollouts. The engine fills in the stage,
  // steps and rank.
  std::function<void(std::vector<buffer::RolloutRecord>)> rollout_sink;
  // Generation elsewhere (parallel.rollout.ranks): what model::generate(sampler, ids, mask, options)
  // returns, where `sampler` holds policy version `version` of the stage. Unset: in this process.
  std::function<model::GenerationOutput(const model::DecoderModel& sampler, int64_t version, const at::Tensor& ids,
                                        const at::Tensor& mask, const model::GenerationOptions& options)>
      generate;
  // The policy version `policy` holds when it is not `step` (a bounded-staleness snapshot samples).
  int64_t sampler_version = -1;
  // What the engine's producer sampled for this micro-batch (the trainer's RolloutPlan), and the
  // policy that sampled it when that is not `policy` (a bounded-staleness snapshot: its log-probs
  // are the importance ratio's old ones). Unset for trainers that declare no plan.
  std::shared_ptr<const RolloutBatch> rollouts;
  const model::DecoderModel* sampler = nullptr;
  // Asking ahead (parallel.rollout.ahead): hands the rollout ranks now a request that `generate`
  // will be called with later (the same arguments), so it is generated while this rank trains.
  // Unset when generation is colocated or asked for one request at a time; training steps only.
  std::function<void(const model::DecoderModel& sampler, int64_t version, const at::Tensor& ids, const at::Tensor& mask,
                     const model::GenerationOptions& options)>
      prefetch;
  // With `prefetch`: this rank's micro-batches from the current one through the stage's optimizer
  // step `last` (a `step` value; none past the stage's last step), each with its step. Read from
  // the Buffer's seeded order without moving it.
  std::function<std::vector<std::pair<int64_t, std::vector<const buffer::Example*>>>(int64_t last)> upcoming;
};

// Per-row reward components by source name, each a [rows] tensor.
using RewardSources = std::map<std::string, at::Tensor>;

// A context with the four basic fields (the rollout fields keep their defaults); `reference` (may be
// null) must outlive it.
inline StepContext make_step_context(const model::DecoderModel* policy, const model::DecoderModel* reference,
                                     int64_t pad_id, int64_t step) {
  StepContext ctx;
  ctx.policy = policy;
  if (reference != nullptr) ctx.reference = std::make_shared<LocalReference>(*reference);
  ctx.pad_id = pad_id;
  ctx.step = step;
  return ctx;
}

struct LossOutput {
  at::Tensor loss;                        // scalar, differentiable
  Metrics metrics;  // 0-dim tensors or host numbers; exported as aln_train_metric{name=...} / aln_eval_metric{name=...}
  int64_t tokens = 0;                     // tokens processed (throughput)
  // The policy's per-sequence response log-prob sums and token counts behind the loss (detached; rows
  // as buffer::collate_pairs lays them out), set by pair trainers so evaluation needs no second
  // forward pass to score the pairs.
  at::Tensor sequence_logprobs;
  at::Tensor sequence_tokens;
};

class Trainer {
 public:
  virtual ~Trainer() = default;
  virtual std::string name() const = 0;
  virtual Needs needs() const = 0;
  virtual absl::Status prepare(PrepareContext& context) { return absl::OkStatus(); }
  virtual LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& context) = 0;
  // What the steps sample (RolloutPlan above); the default samples nothing. The same for the whole
  // stage: the engine asks once, when the stage opens.
  virtual RolloutPlan rollout_plan() const { return {}; }
  // What compute_loss's loss is a mean over, known before the forward pass: the batch's examples by
  // default; a token-mean loss returns its token count. The engine weights each micro-batch (on
  // each rank) by normalizer / total, so accumulated and data-parallel steps equal one big batch.
  virtual double normalizer(const std::vector<const buffer::Example*>& batch) const {
    return static_cast<double>(batch.size());
  }
  // Called on every rank after each training step's policy update (before the step is logged): a
  // trainer that learns something besides the policy updates it here. Returned metrics join the
  // step's (they must already be equal on every rank).
  virtual std::map<std::string, double> after_step(StepContext& context) { return {}; }
  // That learned state, saved with every checkpoint (into an empty directory, on rank 0) and read
  // back when the stage resumes; `finish` writes what the user keeps once the stage ends.
  virtual absl::Status save_state(const std::string& dir) const { return absl::OkStatus(); }
  // Called on every policy rank, together, just before each checkpoint and before the stage's
  // finish: a trainer whose state is spread over the ranks puts together here, on rank 0, what
  // save_state or finish writes (as the rollout producer does with a sharded sampling snapshot).
  virtual void before_save() {}
  virtual absl::Status load_state(const std::string& dir) { return absl::OkStatus(); }
  virtual absl::Status finish(const std::string& work_dir) const { return absl::OkStatus(); }
  // Evaluation: called once after compute_loss has seen every held-out batch (context.training
  // false); the metrics join the held-out ones. For numbers over the whole set, not a mean over
  // batches (the controllable method's rank correlations).
  virtual std::map<std::string, double> evaluation_summary() { return {}; }
  // Whether the held-out set may be split over the data-parallel ranks (each evaluates its share of
  // the batches and the per-batch numbers are added in batch order, as one process would). A
  // trainer whose evaluation_summary needs every example in one process says false.
  virtual bool evaluation_splits() const { return true; }
};

using TrainerRegistry = Registry<Trainer, const aln::v1::StageSpec&>;

// The one place where trainers are added (trainers/register_all.cpp).
void register_all(TrainerRegistry& registry);

// What methods ask of a job before any trainer exists, answered in register_all.cpp too (the one
// file that names them): the special tokens the tokenizer gets, in this order after its vocabulary
// (training, the reference ranks, `aln eval` and `aln generate` agree on their ids); and a stage's
// start-up checks ("where" prefixes the key path: "stages[1]." or "").
std::vector<std::string> job_special_tokens(const aln::v1::JobSpec& spec);
absl::Status check_stage(const aln::v1::StageSpec& stage, const std::string& where);

}  // namespace aln::trainers
