#pragma once
// Hugging Face model directories both ways: config.json + model.safetensors, or sharded
// model-0000k-of-0000n.safetensors + model.safetensors.index.json. What transformers saves we load;
// what we save transformers loads.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/safetensors.h"
#include "core/model/decoder.h"

namespace aln::model {

// Loads config.json and the weights (single file or sharded), converted to `dtype`.
absl::StatusOr<DecoderModel> load_hf_model(const std::string& dir, at::ScalarType dtype = at::kFloat);
// A pipeline stage of it: reads only the tensors of layers [first, end) (plus the embedding or the
// head when the stage holds them), from whichever shards hold them.
absl::StatusOr<DecoderModel> load_hf_stage(const std::string& dir, int64_t first, int64_t end,
                                           at::ScalarType dtype = at::kFloat);

// Writes config.json and the weights in `dtype` (float32, bfloat16 or float16). Shards when the
// tensors exceed `max_shard_bytes` (0 = never). The directory is written atomically: into
// `dir.tmp-<pid>`, fsynced, then renamed over `dir`.
absl::Status save_hf_model(const DecoderModel& model, const std::string& dir, at::ScalarType dtype = at::kFloat,
                           int64_t max_shard_bytes = 0);

// The same directory, one file, with the tensors handed to `put` one at a time by `produce`, in
// the file's order (io::safetensors_file_order(specs)): a model put together unit by unit is never
// whole in memory. The bytes equal save_hf_model's for the same tensors.
absl::Status save_hf_model_streamed(const ModelConfig& config, const std::vector<io::TensorSpec>& specs,
                                    const std::string& dir,
                                    const std::function<absl::Status(const io::TensorPut& put)>& produce);

}  // namespace aln::model
