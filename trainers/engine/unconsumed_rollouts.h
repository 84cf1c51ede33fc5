#pragma once
// Rollouts produced and not yet consumed, kept with checkpoints. With rollout ranks that generate
// ahead (parallel.rollout.ahead) and a bounded-staleness window (max_staleness k), a checkpoint
// taken inside a window finds the window's later micro-batches already asked for: generated, or
// being generated, and not yet trained on. The checkpoint waits for them and keeps them (the
// trainer/ folder, one file for every policy rank's), and a resumed run takes them as if it had
// asked for them itself: the same requests are neither sent nor generated again, and their weights
// go only when something not kept needs them. Regenerating would give the same bits (same weights,
// prompts and seed); keeping them saves the generation and makes the checkpoint hold the run's
// whole state. Colocated sampling has nothing in flight at a checkpoint (a micro-batch samples and
// trains in the same step).
//
// <checkpoint>/trainer/rollouts_unconsumed.safetensors
//   "policy_ranks"              int64 [1]: the policy ranks of the run that saved them
//   "rank<r>.<i>.request"       uint8: policy rank r's i-th generate request, as sent (the key a later
//                               request must match: stage, version, prompts, settings and seed)
//   "rank<r>.<i>.tokens"        int64 [rows, N], "rank<r>.<i>.logprobs" float32 [rows, N],
//   "rank<r>.<i>.lengths"       int64 [rows]: the answer (model::GenerationOutput)
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/io/safetensors.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/rollout_role.h"

namespace aln::engine {

inline constexpr char kUnconsumedRolloutsFile[] = "rollouts_unconsumed.safetensors";

// Every policy rank (collective over `world`): waits for its sampler's answers asked for ahead, then
// all ranks' are put together as the file's tensors on rank 0, which writes them (the others get
// none). Kept for every rank or for none: nothing when no rank has any, when an answer failed
// anywhere (its step ends the job when it takes it), or past 1 GiB on a rank (generated again).
io::NamedTensors gather_unconsumed(RemoteSampler& sampler, const DataParallel& world);

// The file into `dir` (nothing when `tensors` is empty).
absl::Status write_unconsumed(const std::string& dir, const io::NamedTensors& tensors);

// Policy rank `rank`'s kept rollouts from a checkpoint's trainer/ folder `dir` into `sampler`. Only
// when the run has the `ranks` policy ranks that saved them: on another count each rank's
// micro-batches differ, so nothing would match (they are then generated again). Returns how many
// were handed over (0 without the file); a damaged file is an error naming it and the entry. Each
// rank reads its own entries: the caller makes the ranks agree before going on.
absl::StatusOr<int64_t> restore_unconsumed(const std::string& dir, RemoteSampler& sampler, int rank, int ranks);

}  // namespace aln::engine
