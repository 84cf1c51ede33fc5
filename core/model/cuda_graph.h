#pragma once
// One piece of GPU work captured once into a CUDA graph and replayed: one launch for what would be
// hundreds of kernel launches, so the host queues a decoding step in microseconds and runs far ahead
// of the device. LibTorch's CUDA graphs live in its CUDA libraries, which Aln loads only when a job
// asks for a GPU (core/model/device.h); so they are reached through a small library of Aln's own
// (core/model/cuda/graph_library.cpp, built where LibTorch has CUDA), loaded the same way.
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aln::model {

class CudaGraph {
 public:
  // Whether graphs can be made in this process: the CUDA backend and Aln's graph library load, and no
  // capture has failed in it. The reason otherwise.
  static absl::Status available();

  // Runs `body` once on a side stream (warm-up), then captures it: whatever the body computes must be
  // written into tensors that outlive the graph (or made by the capture and held by the caller), and
  // the body may not read anything back to the host. An exception from the body becomes the error. A
  // failed capture turns graphs off for the rest of the process (available() then says why).
  static absl::StatusOr<std::unique_ptr<CudaGraph>> capture(const std::function<void()>& body);

  // Runs the captured work again on the current stream, after the work queued there.
  absl::Status replay();

  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

 private:
  explicit CudaGraph(void* handle) : handle_(handle) {}
  void* handle_;
};

}  // namespace aln::model
