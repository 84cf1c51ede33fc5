#pragma once
// A fully sharded start (parallel.policy.shard: full): each rank fills its shards of the policy
// without ever holding the whole model. The values come one tensor at a time - a seeded random
// model made tensor by tensor, or a Hugging Face directory (model.path, or an unsharded checkpoint's
// model/) read one layer at a time - each broadcast from data-parallel rank 0, so every rank starts
// from the same values as the whole start's broadcast gives; or, resuming a sharded checkpoint, as
// this rank's own ranges read straight from the rank files that hold them.
// A rank then holds, at most, one layer's tensors (rank 0, reading: with the embedding on the first
// layer and the head on the last) or one whole tensor (the others) beside its shards, instead of the
// whole model. Only data-parallel rank 0 reads a model file.
#include "absl/status/statusor.h"
#include "trainers/engine/policy_worker.h"

namespace aln::engine {

// Whether the job starts its policy sharded: shard: full over more than one data-parallel rank, no
// pipeline stages, and no special tokens for the methods to add (those grow the vocabulary of a
// whole model first; that start stays).
bool starts_sharded(const PolicyWorker& w);
// Whether this job's policy is fully sharded (shard: full over more than one data-parallel rank, no
// pipeline stages): the one rule that decides FullySharded, the sharded start and what a resume reads.
bool runs_fully_sharded(const PolicyWorker& w);

// Makes w.policy (placeholders of the parameters' shapes) and w.fsdp, and fills the shards. Returns
// false, having made nothing, when the model's vocabulary is smaller than the tokenizer's (the whole
// start grows it). Collective over the data-parallel group.
absl::StatusOr<bool> start_sharded(PolicyWorker& w);

// A model of `config`'s parameter shapes with no memory behind them (meta tensors): what a
// FullySharded made with ShapesOnly cuts its layout from.
absl::StatusOr<model::DecoderModel> shapes_only_model(const model::ModelConfig& config);

// Fills `sharded` (ShapesOnly, over shapes_only_model(config)) from the Hugging Face directory `dir`
// the way the sharded start fills the policy: data-parallel rank 0 reads one layer at a time and
// broadcasts each tensor, each rank keeps its ranges. Collective over `dp`; a read that fails on
// rank 0 stops every rank with its error.
absl::Status fill_shards_from_directory(const std::string& dir, const model::ModelConfig& config,
                                        const DataParallel& dp, FullySharded& sharded);

}  // namespace aln::engine
