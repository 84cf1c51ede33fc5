#pragma once
// The shards/ folder of a fully sharded run's checkpoint (parallel.policy.shard: full). Every rank
// writes its own part of the parameters and AdamW moments; nothing is gathered onto one rank.
//
// <checkpoint>/shards/
//   index.json                        written by rank 0, the one manifest of the parts:
//     {"format": "aln-shards-v1", "ranks": N, "config": {the model's Hugging Face config},
//      "files": ["rank-00000-of-0000N.safetensors", ...],
//      "tensors": {name: {"shape": [...], "parts": [[rank, offset, numel], ...]}}}
//   rank-0000k-of-0000N.safetensors   rank k's parts: "<name>", "<name>.exp_avg", "<name>.exp_avg_sq"
//                                     (1-D float32: elements [offset, offset + numel) of the
//                                     flattened tensor) and "step"
//
// Parts are described per parameter, not by the run's units or padding, so a run on any number of
// ranks (sharded or not) reads exactly the ranges it needs: a fully sharded rank reads its own
// ranges (from the one or two old ranks that hold them), one process reads everything.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/decoder.h"
#include "core/optim/optimizer.h"

namespace aln::engine {

inline constexpr const char* kShardsFolder = "shards";

struct ShardPart {
  int64_t rank = 0;
  int64_t offset = 0;  // first element, in the flattened tensor
  int64_t numel = 0;
};

struct ShardedTensor {
  std::vector<int64_t> shape;
  std::vector<ShardPart> parts;  // by offset, covering the tensor exactly
};

struct ShardIndex {
  std::string dir;  // the folder of index.json (set by load_shard_index)
  int64_t ranks = 0;
  std::string config_json;  // the model's config.json text
  std::map<std::string, ShardedTensor> tensors;
};

// Elements [offset, offset + numel) of tensor `name`, flattened.
struct ShardRange {
  std::string name;
  int64_t offset = 0;
  int64_t numel = 0;
};

// "rank-0000k-of-0000N.safetensors".
std::string shard_file_name(int64_t rank, int64_t ranks);

// index.json into `dir` (atomically).
absl::Status write_shard_index(const std::string& dir, const ShardIndex& index);
// Rank `rank`'s parts (keyed "<name><suffix>", 1-D, plus "step") into `dir` (atomically, fsynced).
absl::Status write_rank_shard(const std::string& dir, int64_t rank, int64_t ranks, const optim::TensorMap& parts);

// Reads and checks dir/index.json: every part names a rank below "ranks", the parts of a tensor
// follow each other from element 0 to its last. Errors name the file and the tensor.
absl::StatusOr<ShardIndex> load_shard_index(const std::string& dir);

// Each range, for each suffix ("" is the parameter itself), read from the rank files that hold it
// (only those, and only the tensors that overlap a range): keyed "<name><suffix>", 1-D float32.
// A suffix a file does not hold (moments of a tensor the optimizer never stepped) leaves its key out;
// a missing parameter, or a part of the wrong size, is an error naming the file.
absl::StatusOr<optim::TensorMap> read_shard_ranges(const ShardIndex& index, const std::vector<ShardRange>& ranges,
                                                   const std::vector<std::string>& suffixes);
// Every tensor whole (shaped as the index says), for each suffix.
absl::StatusOr<optim::TensorMap> read_shard_whole(const ShardIndex& index, const std::vector<std::string>& suffixes);
// The policy whole: the index's config and every rank's part of the parameters.
absl::StatusOr<model::DecoderModel> read_shard_policy(const ShardIndex& index);
// The policy as a Hugging Face directory `out` (one file, in `dtype`), written one tensor at a time
// as it is read from the rank files: never whole in memory. The bytes equal save_hf_model's of
// read_shard_policy's model.
absl::Status write_shard_policy(const ShardIndex& index, const std::string& out, at::ScalarType dtype);
// The same ranges of the moments read from an unsharded checkpoint's optimizer.safetensors (whole
// tensors "<name>.exp_avg", "<name>.exp_avg_sq", "step"), only those elements; a parameter whose
// moments the file lacks (never stepped) leaves its keys out, as read_shard_ranges does.
absl::StatusOr<optim::TensorMap> read_optimizer_slices(const std::string& file, const std::vector<ShardRange>& ranges);
absl::StatusOr<at::Tensor> read_optimizer_step(const std::string& file);
// The optimizer's step count, from rank 0's file.
absl::StatusOr<at::Tensor> read_shard_step(const ShardIndex& index);

}  // namespace aln::engine
