#pragma once
// Loading and validating the job specification (proto/aln/v1/job.proto) from YAML.
#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/config/yaml_proto.h"

namespace aln::config {

struct LoadedJob {
  aln::v1::JobSpec spec;
  std::string file;  // as given by the user, for messages
  LineMap lines;     // key path -> line
};

// Reads, parses and validates. Every error is one line: "file:line: key.path: what is wrong".
absl::StatusOr<LoadedJob> load_job_file(const std::string& path);
absl::StatusOr<LoadedJob> load_job_text(const std::string& text, const std::string& file_name);

// INVALID_ARGUMENT "file:line: key.path: message", the line of the closest key path in the YAML.
absl::Status error_at(const LoadedJob& job, const std::string& key_path, const std::string& message);

// Rules that span fields (the per-field ones are in the proto options).
absl::Status validate_job(const LoadedJob& job);

// For a job the launcher runs (ALN_OUTPUT_DIR set): every path the job writes goes below
// `run_dir`. output_dir becomes run_dir; checkpoint.dir and reference.cache_dir (top level and per
// stage), when set, must be relative without a ".." component and are placed under run_dir; an
// absolute or escaping one is refused with "file:line: key.path: ...", so one user's job cannot
// overwrite another's checkpoints. Stage names are folders under output_dir and are checked by
// validate_job.
absl::Status confine_written_paths(LoadedJob* job, const std::string& run_dir);

// The stages to run: `stages`, or the single stage made of the top-level keys.
std::vector<aln::v1::StageSpec> effective_stages(const aln::v1::JobSpec& spec);

// Short name of the stage's method ("sft", "dpo", ...), "" when none is set.
std::string method_name(const aln::v1::TrainerSpec& trainer);

// With parallel.placement: separate, which frozen roles get ranks of their own: the reference when a
// stage's method says so for its options (MethodTraits.reference_ranks_when on the method's options
// in job.proto, the rule a test checks against the trainers' needs), the reward models when a stage
// lists reward_models.
struct SeparateRoles {
  bool reference = false;
  bool reward = false;
};
SeparateRoles separate_roles(const aln::v1::JobSpec& spec);

// Processes the job runs on: the coordinator's own rank (parallel.coordinator: own_rank), the policy's grid plus, with placement separate, the grids of the
// roles that get ranks of their own (launcher, CLI and engine count alike).
int job_world_size(const aln::v1::JobSpec& spec);

// What the policy's data-parallel ranks shard: parallel.policy.shard, with parallel.zero1: true
// (its older spelling) meaning at least optimizer; never SHARD_LEVEL_UNSPECIFIED.
aln::v1::ShardLevel policy_shard(const aln::v1::JobSpec& spec);

// The bound on start-up waits (MPI_Init, the job's communicator and its splits):
// parallel.startup_timeout_s, or when 0 the larger of timeout_s and 60 s.
std::chrono::milliseconds startup_timeout(const aln::v1::JobSpec& spec);

// The seeds a job runs with. Every seed the job file does not set derives from the job's `seed`, so
// changing `seed` alone varies the whole run (initialisation, data order, held-out split, sampling),
// as `seed` does in transformers/TRL. `aln train --dry-run` prints them.
int64_t effective_init_seed(const aln::v1::JobSpec& spec);
struct StageSeeds {
  int64_t shuffle = 0;          // data.shuffle_seed, else the job's seed
  bool shuffle_explicit = false;
  uint64_t eval_split = 0;      // held-out split of train: seed + stage index
  uint64_t sampling = 0;        // generation during training and evaluation: seed + stage index
  uint64_t prepare = 0;         // a method's prepare step (self-generated data): seed * 1000003 + index
};
StageSeeds stage_seeds(const aln::v1::JobSpec& spec, const aln::v1::StageSpec& stage, size_t index);

// A readable dump of the resolved spec (protobuf text format).
std::string to_text(const aln::v1::JobSpec& spec);

}  // namespace aln::config
