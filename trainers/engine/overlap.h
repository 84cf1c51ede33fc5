#pragma once
// Gradient sums overlapped with backward (parallel.overlap): during the step's last backward pass,
// autograd hooks on the parameters fill fixed buckets (reverse name order, so the buckets of the
// last layers, whose gradients come first, fill first) and each bucket's sum over ranks starts as
// soon as it is complete, in the same bucket order on every rank; the hooks also let MPI progress
// the sums already started. After backward the rest starts, everything is waited for and the sums
// replace the gradients. The values are those of DataParallel::all_reduce_gradients (the same
// per-element reduction, deterministic or not); only the timing differs.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/optim/optimizer.h"
#include "trainers/engine/data_parallel.h"

namespace aln::engine {

class OverlappedGradientSum {
 public:
  // Registers the hooks; construct right before the step's last backward pass.
  OverlappedGradientSum(const DataParallel& dp, optim::TensorMap& params, bool deterministic,
                        int64_t bucket_bytes = 4 << 20);
  ~OverlappedGradientSum();
  OverlappedGradientSum(const OverlappedGradientSum&) = delete;
  OverlappedGradientSum& operator=(const OverlappedGradientSum&) = delete;

  // After backward: starts the remaining buckets, waits for all, writes the sums into .grad.
  void finish();
  // Share of the gradient bytes whose sum had started before backward ended.
  double started_during_backward() const { return total_ > 0 ? static_cast<double>(early_) / total_ : 0; }

 private:
  struct Bucket {
    std::vector<std::pair<at::Tensor*, int64_t>> params;  // parameter, offset in flat
    at::Tensor flat;
    at::Tensor gathered;  // deterministic mode: every rank's bucket
    std::unique_ptr<dist::Work> work;
    size_t pending = 0;  // parameters whose gradient has not arrived
    std::vector<char> filled;
  };
  void arrived(size_t bucket, size_t index, const at::Tensor& incoming);
  void start_ready();
  void start(Bucket& b);

  const DataParallel& dp_;
  bool deterministic_;
  std::vector<Bucket> buckets_;
  size_t next_ = 0;  // the next bucket to start (strict order on every rank)
  std::vector<std::pair<at::Tensor, size_t>> hooks_;
  int64_t total_ = 0, early_ = 0;
};

}  // namespace aln::engine
