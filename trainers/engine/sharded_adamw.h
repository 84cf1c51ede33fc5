#pragma once
// AdamW over the data-parallel group, optionally sharded (parallel.policy.shard): the parameters,
// laid end to end in name order, are cut into `ranks` equal ranges.
// - optimizer (ZeRO-1): each rank keeps the AdamW moments of its range only, updates only that
//   range from the (all-reduced) gradients, and the updated ranges are all-gathered.
// - gradients (ZeRO-2): the gradients are reduce-scattered instead of all-reduced, so each rank
//   receives the sum of its range only and the full gradients are released before the update;
//   clipping takes the global norm from the ranges' sums of squares. Reduce-scatter plus
//   all-gather moves the bytes of one all-reduce (ZeRO-1 moves 1.5 times that).
// AdamW is elementwise, so this is the same arithmetic per element as the unsharded optimizer:
// ZeRO-1 gives the same bits; ZeRO-2 too when both sum in rank order (parallel.deterministic; MPI's
// reduce-scatter and all-reduce may add in different orders), except that the gradient norm's
// float64 sum is added in another order (it changes only when that flips the clipping scale's last
// bit). Deterministic ZeRO-2 gathers every rank's bucket: ranks x 32 MiB per bucket in flight. Checkpoints hold
// the full state (gathered), so a run resumes on any number of ranks, sharded or not.
// - full (FSDP / ZeRO-3): the parameters themselves are sharded (fully_sharded.h), their gradients
//   reduce-scattered during backward; AdamW updates this rank's part of each, in place in the
//   shards, and nothing is gathered after the update (each pass gathers what it runs).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/optim/optimizer.h"
#include "trainers/engine/data_parallel.h"

namespace aln::engine {

enum class Sharding { kNone, kOptimizer, kGradients, kFull };

class FullySharded;

class ShardedAdamW {
 public:
  // `params` fixes the set of parameters and their owners (a function of names and sizes only, so
  // every rank computes the same assignment). One rank shards nothing.
  // kFull takes the policy's FullySharded (`full`), which holds the parameters; `params` is then
  // the policy's map of placeholders, and the functions below that take it ignore it.
  ShardedAdamW(optim::AdamWOptions options, const DataParallel& dp, Sharding sharding, const optim::TensorMap& params,
               FullySharded* full = nullptr);

  bool sharded() const { return sharding_ != Sharding::kNone; }
  bool shards_gradients() const { return sharding_ == Sharding::kGradients; }
  // Parameters sharded too: the gradients were reduce-scattered during backward already.
  bool shards_parameters() const { return sharding_ == Sharding::kFull; }
  // ZeRO-2's replacement for DataParallel::all_reduce_gradients: sums the gradients over the ranks
  // (a missing one counts as zeros) keeping only this rank's range of the sum, and releases the
  // parameters' own gradients. Buckets of about `bucket_bytes` per rank, two in flight.
  // `deterministic` gathers each bucket and adds in rank order, as one process would.
  void reduce_scatter_gradients(optim::TensorMap& params, bool deterministic, int64_t bucket_bytes = 32 << 20);
  // optim::clip_grad_norm_on_device over what this rank holds: the whole gradients, or with ZeRO-2
  // its range of the sum (the squares summed over ranks). A 0-dim float64 tensor; nothing is read.
  at::Tensor clip_grad_norm(optim::TensorMap& params, double max_norm, const std::function<void(at::Tensor&)>& total,
                            const std::string& not_counted);
  // Drops the step's gradients (the parameters' and ZeRO-2's range).
  void clear_gradients(optim::TensorMap& params);
  // Bytes of summed gradient this rank holds after the sum (ZeRO-2: its range; else every gradient).
  int64_t gradient_bytes() const;
  // One update with learning rate `lr` of every parameter with a gradient. Collective when sharded.
  void step(optim::TensorMap& params, double lr);
  // The full state ("<name>.exp_avg", "<name>.exp_avg_sq", "step"), as AdamW::state(). Collective
  // when sharded: every rank must call it (rank 0 then writes it; with kFull only rank 0 gets the
  // moments, the others "step" alone).
  optim::TensorMap state() const;
  // A full state (from any number of ranks): this rank keeps its own parameters' moments.
  void load_state(const optim::TensorMap& state);
  // This rank's own moments as AdamW keeps them (with kFull: 1-D, this rank's range of each
  // parameter) and "step"; no collective (a sharded checkpoint's part). And back: moments cut the
  // same way (fsdp_checkpoint.h reads them for this rank's ranges).
  optim::TensorMap local_state() const { return adam_.state(); }
  void load_local_state(const optim::TensorMap& state) { adam_.load_state(state); }
  // Bytes of moments this rank holds.
  int64_t state_bytes() const;
  // This rank's share of the parameters' elements whose moments it keeps (1 when not sharded).
  double owned_share() const;

 private:
  struct Slice {
    int64_t offset = 0;  // first element of the parameter inside the owned range
    int64_t count = 0;
  };
  // This rank's slices as views of the parameters (and of their gradients), keyed by name.
  optim::TensorMap owned(optim::TensorMap& params) const;

  struct FlatEntry {
    int64_t start;  // first element in the flat order
    const at::Tensor* param;
  };
  // Copies elements [first, first + out.numel()) of the gradients laid end to end (`flat`, in flat
  // order; zeros past the end and for parameters without one) into `out`.
  void copy_flat_gradients(const std::vector<FlatEntry>& flat, int64_t first, at::Tensor out) const;

  const DataParallel& dp_;
  Sharding sharding_;
  FullySharded* full_ = nullptr;  // kFull
  at::Tensor grad_range_;  // ZeRO-2: this rank's range of the summed gradients, [width_]
  int64_t lo_ = 0;         // first element of this rank's range
  optim::AdamW adam_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, int64_t> start_;  // first element of each parameter in the flat order
  int64_t total_ = 0;
  int64_t width_ = 0;                    // elements per rank (the last one may own fewer)
  std::map<std::string, Slice> slices_;  // this rank's part of each parameter it touches
};

}  // namespace aln::engine
