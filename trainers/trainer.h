#pragma once
// The trainer plugin contract. A trainer says what it needs and computes a loss from a batch of the
// shared Buffer; the engine owns everything else (micro-batching, accumulation, data/pipeline
// parallelism, optimizer, clipping, schedule, checkpoints, metrics export, evaluation cadence).
//
// Batch, PrepareContext and StepContext grow with the alignment core (issue 4); the shape of the
// contract is fixed here so plugins and the engine can be written against it.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/registry.h"

namespace aln::trainers {

enum class RecordKind { kText, kPreferencePair, kPrompt, kRollout };

// What a trainer asks of the engine.
struct Needs {
  RecordKind records = RecordKind::kText;
  bool reference_model = false;     // frozen reference log-probs
  int reward_models = 0;            // scorers it reads
  bool full_vocab_reference = false;  // per-position distributions, not only token log-probs (TDPO, Ra-DPO)
  bool rollouts = false;            // generates with the policy (GRPO, HAIR)
};

// A tokenised batch; pairs are laid out chosen rows first, then rejected rows.
struct Batch {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor attention_mask;  // [B, T] int64, 1 = real token
  at::Tensor response_mask;   // [B, T] float, 1 on response tokens (the ones losses sum over)
  std::map<std::string, at::Tensor> extras;  // per-record labels: safety flags, rewards, ref log-probs...
};

struct LossOutput {
  at::Tensor loss;                         // scalar, differentiable
  std::map<std::string, double> metrics;   // named scalars exported as aln_train_<name>
};

struct PrepareContext {
  const aln::v1::StageSpec* stage = nullptr;
};

struct StepContext {
  int64_t step = 0;
};

class Trainer {
 public:
  virtual ~Trainer() = default;
  virtual std::string name() const = 0;
  virtual Needs needs() const = 0;
  // One-time work before training (data transforms, self-generated data, caches).
  virtual absl::Status prepare(PrepareContext& context) { return absl::OkStatus(); }
  virtual LossOutput compute_loss(const Batch& batch, StepContext& context) = 0;
};

using TrainerRegistry = Registry<Trainer, const aln::v1::StageSpec&>;

// The one place where trainers are added (trainers/register_all.cpp).
void register_all(TrainerRegistry& registry);

}  // namespace aln::trainers
