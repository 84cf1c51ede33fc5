#pragma once
// The policy's data-parallel group as the engine uses it: scalar and vector sums, a bucketed
// gradient all-reduce and a parameter broadcast, every wait bounded by the job's timeout. With no
// communicator (one process) every operation is the identity, so the single-process path stays
// bit for bit what it was.
//
// Reduction order (what makes DP runs match one process to float32 rounding): each rank's loss is
// weighted by its normalizer over the global one before backward, gradients are summed over ranks
// in fixed buckets (parameters in name order), and every rank then runs the same clipping and AdamW
// on the same summed gradient, so parameters stay identical on all ranks without a broadcast.
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

#include "core/optim/optimizer.h"
#include "distributed/communicator.h"

namespace aln::engine {

class DataParallel {
 public:
  DataParallel(dist::Communicator* comm, std::chrono::milliseconds timeout) : comm_(comm), timeout_(timeout) {}

  int rank() const { return comm_ != nullptr ? comm_->rank() : 0; }
  int size() const { return comm_ != nullptr ? comm_->size() : 1; }
  bool lead() const { return rank() == 0; }

  // Sums over ranks in place (any dtype, contiguous). Throws aln::Error naming the rank and the
  // operation when a peer does not answer within the timeout (or `timeout` when given).
  void sum(at::Tensor& tensor, std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const;
  double sum(double value, std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const;

  // Every rank goes on, or every rank stops, after a step that may fail on some ranks only (a file
  // each reads or writes): OK when `local` is OK on every rank; otherwise a rank that failed gets its
  // own error back and the others `elsewhere` (what another rank could not do), so none is left
  // waiting in the next collective. One sum over the ranks (bounded as sum() is).
  absl::Status agree(const absl::Status& local, const absl::Status& elsewhere,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const;

  // Every rank's `values` (all ranks pass the same count), rank by rank: size() * values.size().
  std::vector<double> gather(const std::vector<double>& values) const;

  // Every rank's `tensor` (all ranks pass the same size), concatenated in rank order.
  at::Tensor all_gather(const at::Tensor& tensor) const;

  // Asynchronous building blocks (the caller keeps the tensors alive until the work is waited for).
  std::unique_ptr<dist::Work> start_sum(at::Tensor& flat) const { return comm_->all_reduce_sum(flat); }
  std::unique_ptr<dist::Work> start_all_gather(const at::Tensor& flat, at::Tensor& out) const {
    return comm_->all_gather(flat, out);
  }
  // This rank's block of the sum of every rank's `input` (size() blocks of out.numel()).
  std::unique_ptr<dist::Work> start_reduce_scatter(const at::Tensor& input, at::Tensor& out) const {
    return comm_->reduce_scatter_sum(input, out);
  }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Rank 0's values everywhere.
  void broadcast(optim::TensorMap& tensors) const;

  // Sums every parameter's gradient over ranks (a missing gradient counts as zeros), in buckets of
  // about `bucket_bytes`, all launched before the first is waited for. `deterministic` gathers the
  // buckets and adds them in rank order ((g0 + g1) + g2 ...), exactly as one process accumulating
  // the ranks' micro-batches in turn would; otherwise MPI's all-reduce decides the order.
  void all_reduce_gradients(optim::TensorMap& params, bool deterministic, int64_t bucket_bytes = 32 << 20) const;

  // Deterministic mode's reduction: `gathered` holds size() copies of a flat bucket, rank by rank;
  // writes (g0 + g1) + g2 ... into `flat` (the order one process accumulating them would use).
  void add_in_rank_order(const at::Tensor& gathered, at::Tensor& flat) const;

 private:
  dist::Communicator* comm_;
  std::chrono::milliseconds timeout_;
};

}  // namespace aln::engine
