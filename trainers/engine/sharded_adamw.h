#pragma once
// AdamW over the data-parallel group, optionally with its moments sharded (ZeRO stage 1,
// parallel.zero1): the parameters, laid end to end in name order, are cut into `ranks` equal
// ranges; each rank keeps the AdamW moments of its range only, updates only that range from the
// (already summed) gradients, and the updated ranges are all-gathered. AdamW is elementwise, so
// this is the same arithmetic per element as the unsharded optimizer. Every rank runs the same arithmetic on the same
// summed gradients as the unsharded optimizer, so results are bit for bit the same; only the moments' memory shrinks
// (to about 1/ranks). Checkpoints hold the full state (gathered), so a run resumes on any number of ranks, sharded or
// not.
#include <cstdint>
#include <string>
#include <vector>

#include "core/optim/optimizer.h"
#include "trainers/engine/data_parallel.h"

namespace aln::engine {

class ShardedAdamW {
 public:
  // `params` fixes the set of parameters and their owners (a function of names and sizes only, so
  // every rank computes the same assignment).
  ShardedAdamW(optim::AdamWOptions options, const DataParallel& dp, bool shard, const optim::TensorMap& params);

  bool sharded() const { return shard_; }
  // One update with learning rate `lr` of every parameter with a gradient. Collective when sharded.
  void step(optim::TensorMap& params, double lr);
  // The full state ("<name>.exp_avg", "<name>.exp_avg_sq", "step"), as AdamW::state(). Collective
  // when sharded: every rank must call it (rank 0 then writes it).
  optim::TensorMap state() const;
  // A full state (from any number of ranks): this rank keeps its own parameters' moments.
  void load_state(const optim::TensorMap& state);
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

  const DataParallel& dp_;
  bool shard_;
  optim::AdamW adam_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, int64_t> start_;  // first element of each parameter in the flat order
  int64_t total_ = 0;
  int64_t width_ = 0;                    // elements per rank (the last one may own fewer)
  std::map<std::string, Slice> slices_;  // this rank's part of each parameter it touches
};

}  // namespace aln::engine
