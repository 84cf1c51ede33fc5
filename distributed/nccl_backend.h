#pragma once
// NCCL backend for CUDA tensors. A group's NCCL communicator is bootstrapped over an existing one
// (MPI): the group's first rank makes the unique id and broadcasts it; initialisation is
// non-blocking and gives up after the timeout. Collectives and send/recv run on a stream from
// LibTorch's pool, ordered after the caller's current stream, with every tensor in flight recorded
// on it for the caching allocator. A Work's wait() polls its event on the host, bounded (the
// communicator stays usable after a timeout); wait_on_stream() makes the caller's current stream
// wait for it without blocking the host and hands the timeout to a watchdog thread, which ends the
// process (after ncclCommAbort, naming the operation) when a collective outlives it or NCCL reports
// a failed peer. Needs LibTorch's CUDA backend loaded (model::load_cuda_backend). Compiled and
// linked in every CUDA build; where no GPU exists, creating one fails with an error that says so.
// Why not LibTorch's ProcessGroupNCCL: docs/distributed.md.
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "distributed/communicator.h"

namespace aln::dist {

// NCCL_UNIQUE_ID_BYTES bytes made by `bootstrap`'s rank 0 and broadcast to every rank of it.
absl::StatusOr<std::string> bootstrap_nccl_unique_id(Communicator& bootstrap, std::chrono::milliseconds timeout);

// A communicator over `bootstrap`'s ranks on CUDA device `device` (usually the node-local rank).
absl::StatusOr<std::unique_ptr<Communicator>> make_nccl_communicator(Communicator& bootstrap, int device,
                                                                     std::chrono::milliseconds timeout);

// The ncclDataType_t for a tensor dtype, as an int (nullopt: NCCL has none, e.g. complex or bool).
std::optional<int> nccl_data_type(at::ScalarType dtype);

}  // namespace aln::dist
