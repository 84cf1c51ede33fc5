#pragma once
// Training checkpoints: everything a run needs to continue exactly where it stopped.
//
// <dir>/step-00000150/
//   model/                  the policy in Hugging Face format (transformers loads it as is)
//   shards/                 instead of model/ and optimizer.safetensors in a fully sharded run: each
//                           rank's part of the parameters and moments, one index (fsdp_checkpoint.h);
//                           `aln convert --checkpoint` writes its policy as a Hugging Face directory
//   reference/              the frozen reference, only when its log-probs are computed on the fly
//   optimizer.safetensors   AdamW moments and step count
//   rng.safetensors         the generators' states: "cpu", and "cuda:<i>" for each GPU in use (rng_state.h)
//   trainer/                what the trainer learns besides the policy (HAIR's shadow reward models), the
//                           rollout producer's sampling snapshot, and rollouts generated ahead on rollout
//                           ranks and not yet trained on (unconsumed_rollouts.h)
//   state.json              stage, step, Buffer position, guard counter, reference-cache key, reports
//   MANIFEST.json           written last: every file above with its size
//
// A checkpoint is written into a hidden temporary directory, every file fsync'ed, the manifest
// last, then renamed into place and the parent directory fsync'ed; a directory without a valid
// manifest is never used. After each save only the newest `keep_last` checkpoints remain.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/buffer/buffer.h"
#include "core/logging.h"
#include "core/model/decoder.h"
#include "core/optim/optimizer.h"
#include "trainers/engine/fsdp_checkpoint.h"
#include "trainers/engine/report.h"

namespace aln::engine {

struct TrainingState {
  int64_t global_step = 0;  // optimizer steps over all stages
  int64_t stage_index = 0;  // the stage in progress
  std::string stage_name;
  int64_t stage_step = 0;     // optimizer steps done in that stage
  buffer::Position position;  // of that stage's Buffer
  int64_t consecutive_nonfinite = 0;
  int64_t data_parallel = 1;          // ranks the Buffer position was counted for
  std::string reference_cache_key;    // the stage's cached reference log-probs (empty: none)
  std::string spec_fingerprint;       // of the job spec; resuming a different job is refused
  std::vector<StageReport> finished;  // stages already done
  MetricMap stage_before;             // the running stage's held-out numbers before training
};

struct LoadedCheckpoint {
  std::string path;
  model::TensorMap rng;  // generator states by name (rng_state.h)
  // Whole (from model/, or put together from shards/); not read when load() was asked not to (a
  // fully sharded start reads its own parts later).
  std::optional<model::DecoderModel> policy;
  // The checkpoint's reference/ folder (the frozen reference of a stage scored on the fly), empty when
  // it has none. Read as that stage starts: whole, or streamed into each rank's shards beside a fully
  // sharded policy (so no rank reads it whole).
  std::string reference_dir;
  optim::TensorMap optimizer;  // whole; empty when `shards` holds it (read what a rank needs from there)
  TrainingState state;
  std::optional<ShardIndex> shards;
  // Set (and `optimizer` left empty) when load() was asked not to read the whole optimizer file: a
  // fully sharded run reads only its own slices of the moments from it.
  std::string optimizer_file;
};

// What a checkpoint holds besides the training state.
struct CheckpointContents {
  const model::DecoderModel* policy = nullptr;     // whole, written as model/ (null: `shards` holds it)
  const model::DecoderModel* reference = nullptr;  // only when its log-probs are computed on the fly
  const optim::TensorMap* optimizer = nullptr;     // the whole AdamW state (null: `shards` holds it)
  // A fully sharded run: every rank wrote its shard, and rank 0 the index, into staging_shards() of
  // the step, which is moved in as shards/ (the policy is then null).
  bool shards = false;
  std::function<absl::Status(const std::string&)> trainer_state;  // writes trainer/ (when set)
  const model::TensorMap* rng = nullptr;  // generator states to save (null: this process's, rng_states())
};

class CheckpointManager {
 public:
  CheckpointManager(std::string dir, int keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {}

  const std::string& dir() const { return dir_; }

  // Writes step-<global_step> atomically, then prunes old checkpoints. Returns its path.
  absl::StatusOr<std::string> save(const CheckpointContents& contents, const TrainingState& state) const;

  // Where the ranks of a fully sharded run write their shards of step `global_step` before rank 0
  // saves the checkpoint (a hidden folder next to the checkpoints, on the file system they share).
  std::string staging_shards(int64_t global_step) const;
  // Makes that folder empty (rank 0, before the ranks write).
  absl::Status prepare_staging(int64_t global_step) const;

  // The newest complete checkpoint (none: nullopt). Incomplete or damaged ones are skipped with a
  // warning naming what is wrong.
  std::optional<std::string> latest(const Logger& log) const;

  // `with_policy`: false leaves LoadedCheckpoint::policy empty (read it with load_policy when needed).
  static absl::StatusOr<LoadedCheckpoint> load(const std::string& path, bool with_policy = true,
                                               bool whole_optimizer = true);
  // A checkpoint's policy, whole: model/, or a fully sharded run's parts put together from shards/.
  static absl::StatusOr<model::DecoderModel> load_policy(const std::string& path);

 private:
  std::vector<std::pair<int64_t, std::string>> complete(const Logger* log) const;
  std::string dir_;
  int keep_last_;
};

// state.json's text and back (the coordinator's own process receives the state this way); a
// report of finished stages in the same form.
std::string state_to_json(const TrainingState& state);
absl::StatusOr<TrainingState> state_from_json(const std::string& text, const std::string& source);
std::string report_to_json(const JobReport& report);
absl::StatusOr<JobReport> report_from_json(const std::string& text, const std::string& source);

// Checks a checkpoint's manifest against the files present; the error says which file is missing
// or has the wrong size.
absl::Status verify_manifest(const std::string& path);

}  // namespace aln::engine
