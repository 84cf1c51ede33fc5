#pragma once
// Sharded safetensors checkpoints as transformers writes them: `model-00001-of-00003.safetensors`,
// ... plus `model.safetensors.index.json` = {"metadata": {...}, "weight_map": {tensor: shard file}}.
// A checkpoint that fits in one shard is a single `model.safetensors` without an index.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/io/safetensors.h"

namespace aln::io {

inline constexpr std::string_view kSafetensorsSingleFile = "model.safetensors";
inline constexpr std::string_view kSafetensorsIndexFile = "model.safetensors.index.json";
// transformers' default max_shard_size ("5GB" = 5 * 10^9 bytes in huggingface_hub).
inline constexpr int64_t kDefaultMaxShardBytes = 5'000'000'000;

// huggingface_hub's split (split_state_dict_into_shards_factory): tensors in the given order fill a
// shard until the next one would push it past `max_shard_bytes`; a tensor larger than the limit
// gets a shard of its own. Returns the tensor indices of each shard.
std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& tensor_bytes, uint64_t max_shard_bytes);

// Loads every tensor listed in the index at `index_path`; shard paths are relative to its folder.
// The index and the shards must agree exactly (every listed tensor in its shard, no unlisted tensors,
// no name in two shards). `metadata` of the result is the index's "metadata" object, with non-string
// values as compact JSON (e.g. "total_size" -> "1234").
// `wanted` (optional): only those tensors, and only the shards that hold one.
absl::StatusOr<SafetensorsFile> load_sharded_safetensors(const std::string& index_path,
                                                         const TensorFilter& wanted = {});

// Loads `dir/model.safetensors` when present (as transformers prefers it), else `dir/model.safetensors.index.json`.
absl::StatusOr<SafetensorsFile> load_safetensors_checkpoint(const std::string& dir, const TensorFilter& wanted = {});

// Writes `tensors` into `dir` (which must exist) as transformers' save_pretrained does: shards planned
// by plan_shards, each with `shard_metadata` ({"format": "pt"} by default, what transformers checks),
// index with metadata {"total_parameters", "total_size"} in its JSON layout (sorted keys, indent 2).
// Each file is written atomically and the index last; afterwards stale `model.safetensors`,
// `model-*-of-*.safetensors` and index files from an earlier save into `dir` are removed, so no
// loader can pick up a mix of old and new files.
absl::Status save_sharded_safetensors(const std::string& dir, const NamedTensors& tensors,
                                      uint64_t max_shard_bytes = kDefaultMaxShardBytes,
                                      const SafetensorsMetadata& shard_metadata = {{"format", "pt"}});

}  // namespace aln::io
