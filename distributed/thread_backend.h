#pragma once
// An in-process backend: the ranks of a world are threads of one process sharing a hub, behind the
// same Communicator contract as MPI. It exists so that the engine's distributed pieces (gradient
// sums, overlap, ZeRO-1, the pipeline executor) get fast unit tests without mpirun; the mpirun
// end-to-end tests stay the proof that the real backend behaves the same.
//
// Semantics: collectives are matched by their order of issue on each rank (as MPI's are); a sum
// adds the ranks' inputs in rank order ((x0 + x1) + x2 ...), so results are bit-reproducible;
// inputs are copied when a collective is issued, results written when it is waited for. Every wait
// is bounded by its timeout and reports the rank, the operation and its sequence number.
#include <functional>
#include <memory>
#include <vector>

#include "distributed/communicator.h"

namespace aln::dist {

// One communicator per rank of a world of `world_size` threads; hand communicator r to thread r.
std::vector<std::unique_ptr<Communicator>> make_thread_communicators(int world_size);

// Runs `body(comm)` on `world_size` threads, one rank each, and rethrows the first exception any of
// them threw (after every thread has ended).
void run_thread_ranks(int world_size, const std::function<void(Communicator&)>& body);

}  // namespace aln::dist
