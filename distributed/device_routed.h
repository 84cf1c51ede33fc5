#pragma once
// Ranks that each own a GPU: their collectives on device tensors go over NCCL (device memory moved
// by the GPUs themselves, ordered on streams), the rest (the engine's control messages, agreements,
// metrics read on the host, checkpoint barriers) over the host backend they were started with
// (MPI). Each operation goes whole to one side, chosen by where its tensors are; an operation with
// tensors on both sides is refused, since neither backend can move it. Each side keeps its own
// order, and every rank issues the same operations in the same order, so both sides see the same
// sequence on every rank; NCCL operations are queued without waiting, so a rank blocked in an MPI
// wait does not hold back a peer's NCCL work. barrier() is the host's: the engine uses it to order
// host work (files written before they are read).
//
// How a backend is chosen for the policy's ranks (parallel.backend): choose_collective_path.
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "distributed/communicator.h"

namespace aln::dist {

// `device`: the NCCL communicator over the same ranks as `host` (same rank numbers); `host`: not
// owned, must outlive the result and every communicator split from it. `on_device`: which tensors
// go to `device` (default: CUDA tensors; tests on a machine without a GPU pass another rule).
std::unique_ptr<Communicator> make_device_routed(std::unique_ptr<Communicator> device, Communicator* host,
                                                 std::function<bool(const at::Tensor&)> on_device = {});

// Where the policy's collectives go.
enum class CollectivePath {
  kHost,        // the host backend as it is (CPU tensors; or one rank: nothing to move)
  kHostStaged,  // device tensors through host buffers over the host backend (make_host_staged)
  kNccl,        // device tensors over NCCL, the rest over the host backend (make_device_routed)
};
struct BackendFacts {
  bool cuda = false;     // runtime.device: cuda
  int ranks = 1;         // the policy's ranks
  int node_ranks = 1;    // processes on this rank's host
  int node_devices = 0;  // GPUs this rank's host shows
  bool nccl_built = false;
  std::string host;  // for errors
};
// `wanted`: parallel.backend ("auto", "local", "mpi" or "nccl"). auto takes the host backend, staged
// on GPUs: NCCL is asked for by name until its path in training has run on GPUs (docs/distributed.md).
// An impossible choice is InvalidArgument naming the key and saying what to set instead.
absl::StatusOr<CollectivePath> choose_collective_path(std::string_view wanted, const BackendFacts& facts);

}  // namespace aln::dist
