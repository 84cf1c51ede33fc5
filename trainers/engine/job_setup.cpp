#include "trainers/engine/job_setup.h"

#include "absl/strings/str_cat.h"
#include "core/config/job_config.h"
#include "core/fingerprint.h"
#include "core/model/hf_checkpoint.h"
#include "trainers/trainer.h"

namespace aln::engine {

// What must not change between a run and its resumption: the model, seed and stages. Run-time
// settings (threads, metrics port, checkpoint cadence, output paths, the number of ranks and how the
// global batch is split over micro-batches) may.
std::string spec_fingerprint(const aln::v1::JobSpec& spec) {
  aln::v1::JobSpec core;
  *core.mutable_model() = spec.model();
  core.set_seed(spec.seed());
  for (auto stage : config::effective_stages(spec)) {
    // How the global batch is split (micro-batch x accumulation x ranks) may change on resume.
    stage.mutable_optimizer()->clear_micro_batch_size();
    stage.mutable_optimizer()->clear_gradient_accumulation();
    *core.add_stages() = stage;
  }
  *core.mutable_eval() = spec.eval();
  return Fingerprint().add(config::to_text(core)).hex();
}

namespace {

// The first key of `spec` that moves a policy's activations or weights between processes (pipeline
// stages, full sharding, separate roles, rollout ranks), or null: what GPUs do not run yet.
const char* multi_process_layout(const aln::v1::JobSpec& spec) {
  const auto& par = spec.parallel();
  return par.policy().pipeline_parallel() > 1          ? "parallel.policy.pipeline_parallel > 1"
         : config::policy_shard(spec) == aln::v1::FULL ? "parallel.policy.shard: full"
         : par.placement() == aln::v1::SEPARATE        ? "parallel.placement: separate"
         : par.rollout().ranks() > 0                   ? "parallel.rollout.ranks"
                                                       : nullptr;
}

}  // namespace

at::ScalarType job_compute_dtype(const aln::v1::JobSpec& spec) {
  return spec.model().dtype() == aln::v1::BFLOAT16 ? at::kBFloat16 : at::kFloat;
}

model::DecoderModel stored_for_job(const aln::v1::JobSpec& spec, model::DecoderModel m) {
  const at::ScalarType dtype = job_compute_dtype(spec);
  if (m.storage_dtype() == dtype) return m;
  model::DecoderModel out = m.to(dtype);
  out.set_compute_dtype(at::ScalarType::Undefined);  // stored as it computes
  return out;
}

// Settings the schema already has but the engine does not implement yet are refused by name, not
// silently ignored.
absl::Status check_supported(const aln::v1::JobSpec& spec) {
  if (spec.model().dtype() == aln::v1::FLOAT16) {
    return absl::UnimplementedError(
        "model.dtype: float16 needs loss scaling, which Aln does not do; use bfloat16 (same width, float32's range)");
  }
  // Mixed precision runs in every layout: activations between pipeline stages travel in the
  // compute dtype (MPI moves them as 16-bit words), weights and answers between roles in float32,
  // and each role stores its frozen models in the compute dtype as a colocated run does.
  if (spec.runtime().device() == aln::v1::CUDA) {
    // What runs on a GPU so far: one process, or data-parallel ranks (over MPI through host buffers, or
    // NCCL with parallel.backend: nccl),
    // each whole policy on its rank's GPU with its reference and reward models. Overlap's gradient
    // hooks would run on autograd's device thread, calling MPI there.
    const auto& par = spec.parallel();
    const char* not_yet = multi_process_layout(spec) != nullptr    ? multi_process_layout(spec)
                          : par.coordinator() == aln::v1::OWN_RANK ? "parallel.coordinator: own_rank"
                          : par.overlap()                          ? "parallel.overlap"
                                                                   : nullptr;
    if (not_yet != nullptr) {
      return absl::UnimplementedError(absl::StrCat("runtime.device: cuda with ", not_yet,
                                                   " is not supported yet (on a GPU: one process or data-parallel "
                                                   "ranks); remove it or set runtime.device: cpu"));
    }
  }
  const auto stages = config::effective_stages(spec);
  for (size_t s = 0; s < stages.size(); ++s) {
    const std::string where = spec.stages_size() > 0 ? absl::StrCat("stages[", s, "].") : "";
    const auto& d = stages[s].data();
    if (d.packing()) {
      return absl::UnimplementedError(absl::StrCat(where, "data.packing: not supported yet; set it to false (",
                                                   "data.length_grouping reduces padding instead)"));
    }
    if (absl::Status checked = trainers::check_stage(stages[s], where); !checked.ok()) return checked;
    for (int i = 0; i < d.train_size(); ++i) {
      if (d.train(i).weight() != 1.0) {
        return absl::UnimplementedError(absl::StrCat(where, "data.train[", i,
                                                     "].weight: mixing weights are not supported yet (every source is "
                                                     "used in full); remove the key or use limit"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<model::ModelConfig> initial_config(const aln::v1::JobSpec& spec, const TextEncoder& encoder) {
  model::ModelConfig config = model::from_job_spec(spec.model().config());
  if (config.vocab_size < encoder.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("model.config.vocab_size ", config.vocab_size,
                                                   " is smaller than the tokenizer's ", encoder.vocab_size()));
  }
  config.eos_token_id = encoder.eos_id();
  config.pad_token_id = encoder.pad_id();
  return config;
}

absl::StatusOr<model::DecoderModel> initial_policy(const aln::v1::JobSpec& spec, const TextEncoder& encoder) {
  if (!spec.model().path().empty()) return model::load_hf_model(spec.model().path());
  auto config = initial_config(spec, encoder);
  if (!config.ok()) return config.status();
  return model::DecoderModel::random_init(*config, static_cast<uint64_t>(config::effective_init_seed(spec)));
}

}  // namespace aln::engine
