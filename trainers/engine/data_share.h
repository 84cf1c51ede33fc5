#pragma once
// One reader for a stage's data (parallel.data_reader: lead): world rank 0 reads and tokenizes the
// files and broadcasts the examples (aln.v1.StageExamples, size then bytes) to the other ranks of a
// communicator, which never open the files. A read error on rank 0 reaches every rank as the same
// error, so nobody waits for data that will not come.
#include <chrono>

#include "absl/status/statusor.h"
#include "distributed/communicator.h"
#include "trainers/engine/examples.h"

namespace aln::engine {

// Where a stage's examples come from: read here (no `comm`), or read by rank 0 of `comm` and sent
// to its other ranks, each wait bounded by `timeout` (long: rank 0 may be reading a large dataset).
struct DataSource {
  dist::Communicator* comm = nullptr;
  std::chrono::milliseconds timeout{0};
};

// Every rank of `comm` calls this with `data`: on rank 0 what it read (or the error it got), sent
// and left as it is; on the others anything, replaced by rank 0's examples or its error.
void share_stage_data(dist::Communicator& comm, absl::StatusOr<StageData>& data, std::chrono::milliseconds timeout);

}  // namespace aln::engine
