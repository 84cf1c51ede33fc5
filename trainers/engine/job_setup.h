#pragma once
// What the engine checks and builds before training: the job's fingerprint (what a resumed run must
// share with the one it continues), the settings refused until implemented, and the initial policy.
#include <string>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/model/decoder.h"
#include "trainers/engine/text_encoder.h"

namespace aln::engine {

std::string spec_fingerprint(const aln::v1::JobSpec& spec);
absl::Status check_supported(const aln::v1::JobSpec& spec);
// The dtype the job's passes compute in (model.dtype: bfloat16 -> bfloat16, else float32).
at::ScalarType job_compute_dtype(const aln::v1::JobSpec& spec);
// A frozen model (a reference or reward model) stored as the job computes: a copy in bfloat16
// under mixed precision, as every role keeps them; `m` itself otherwise.
model::DecoderModel stored_for_job(const aln::v1::JobSpec& spec, model::DecoderModel m);
// A Hugging Face model directory (model.path) or a seeded random model from model.config.
absl::StatusOr<model::DecoderModel> initial_policy(const aln::v1::JobSpec& spec, const TextEncoder& encoder);
// model.config with the tokenizer's end and padding ids (the random model's config).
absl::StatusOr<model::ModelConfig> initial_config(const aln::v1::JobSpec& spec, const TextEncoder& encoder);

}  // namespace aln::engine
