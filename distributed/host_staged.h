#pragma once
// Device tensors over a backend that moves host memory only (MPI built without CUDA support, the
// usual case, and the one the GPU machine has): each operation's device tensors are copied into
// host buffers, the wrapped backend runs on those, and wait() copies what the operation wrote back
// into the device tensors. Host tensors pass straight through. This is what lets data-parallel
// ranks train on GPUs over MPI (ranks sharing one GPU, which NCCL refuses, or clusters without
// NCCL); NCCL moves device memory itself and needs no staging.
//
// The copy to the host waits for the device (the values must exist before MPI reads them), so a
// staged collective does not overlap with device work queued before it: the cost of going through
// the host, stated in docs/distributed.md.
#include <memory>

#include "distributed/communicator.h"

namespace aln::dist {

// Wraps `inner` (not owned; must outlive the result and every communicator split from it).
// `stage_host_tensors` stages host tensors too (through separate host buffers), so that tests on
// a machine without a GPU run every copy this path makes.
std::unique_ptr<Communicator> make_host_staged(Communicator* inner, bool stage_host_tensors = false);

}  // namespace aln::dist
