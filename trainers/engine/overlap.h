#pragma once
// Gradient sums overlapped with backward (parallel.overlap): during the step's last backward pass,
// autograd hooks on the parameters fill fixed buckets, in the order the gradients become ready
// (GradientReadyOrder), and each bucket's sum over ranks starts as soon as it is complete, in the
// same bucket order on every rank; the hooks also let MPI progress the sums already started. After backward the rest
// starts, everything is waited for and the sums replace the gradients. The values are those of
// DataParallel::all_reduce_gradients (the same per-element reduction, deterministic or not); only the timing differs.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/optim/optimizer.h"
#include "trainers/engine/data_parallel.h"

namespace aln::engine {

// The order in which backward produces the parameters' gradients, which the buckets follow so the
// first bucket can start while backward still runs (the output projection's gradient comes first,
// the embedding's last). Name order cannot stand in for it ("layers.10" sorts before "layers.2",
// "lm_head" after "model."), so, as DDP does, the first overlapped step records the real order and
// the ranks adopt rank 0's record; that step itself uses a guess (layer numbers compared as numbers,
// highest first). Bucketing never changes values, only when each sum may start.
class GradientReadyOrder {
 public:
  // The order to bucket `params` in: the recorded one, or the guess before a step has recorded it.
  std::vector<std::string> order(const optim::TensorMap& params) const;
  bool recorded() const { return !recorded_.empty(); }
  // After the recording step: every rank passes what it saw; all adopt rank 0's (collective).
  // Parameters whose gradient did not arrive follow in the guessed order.
  void adopt(const std::vector<std::string>& arrivals, const optim::TensorMap& params, const DataParallel& dp);

 private:
  std::vector<std::string> recorded_;
};

class OverlappedGradientSum {
 public:
  // Registers the hooks; construct right before the step's last backward pass. `order` (kept by the
  // caller across steps) gives the bucket order and learns it on the first step; without one the
  // guess is used every step.
  OverlappedGradientSum(const DataParallel& dp, optim::TensorMap& params, bool deterministic,
                        GradientReadyOrder* order = nullptr, int64_t bucket_bytes = 4 << 20);
  ~OverlappedGradientSum();
  OverlappedGradientSum(const OverlappedGradientSum&) = delete;
  OverlappedGradientSum& operator=(const OverlappedGradientSum&) = delete;

  // After backward: starts the remaining buckets, waits for all, writes the sums into .grad.
  void finish();
  // Share of the gradient bytes whose sum had started before backward ended.
  double started_during_backward() const { return total_ > 0 ? static_cast<double>(early_) / total_ : 0; }
  // The parameter names of each bucket, in starting order (for tests and logs).
  std::vector<std::vector<std::string>> bucket_names() const;

 private:
  struct Bucket {
    std::vector<std::pair<at::Tensor*, int64_t>> params;  // parameter, offset in flat
    std::vector<std::string> names;
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
  const optim::TensorMap& all_params_;
  bool deterministic_;
  GradientReadyOrder* order_;
  std::vector<std::string> arrivals_;  // recorded while `order_` has not learnt the order
  std::vector<Bucket> buckets_;
  size_t next_ = 0;  // the next bucket to start (strict order on every rank)
  std::vector<std::pair<at::Tensor, size_t>> hooks_;
  int64_t total_ = 0, early_ = 0;
};

}  // namespace aln::engine
