#pragma once
// One reader for a stage's data (parallel.data_reader: lead): world rank 0 reads and tokenizes the
// files and broadcasts the examples (aln.v1.StageExamples, size then bytes) to the other ranks of a
// communicator, which never open the files. A read error on rank 0 reaches every rank as the same
// error, so nobody waits for data that will not come.
#include <chrono>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "aln/v1/control.pb.h"
#include "distributed/communicator.h"
#include "trainers/engine/examples.h"

namespace aln::engine {

// Where a stage's examples come from: read here (no `comm`), or read by rank 0 of `comm` and sent
// to its other ranks, each wait bounded by `timeout` (long: rank 0 may be reading a large dataset).
// `fetch` (when set) replaces reading on the rank that reads: the coordinator's own process reads
// and sends the examples to the policy's first rank (parallel.coordinator: own_rank).
struct DataSource {
  dist::Communicator* comm = nullptr;
  std::chrono::milliseconds timeout{0};
  std::function<absl::StatusOr<StageData>()> fetch;
};

// A stage's examples as a message, or the reader's error in it (an error also when the message
// would pass protobuf's 2 GiB limit; `data` then holds that error too), and back; `reader` names
// who read them in the error.
aln::v1::StageExamples stage_message(absl::StatusOr<StageData>& data);
absl::StatusOr<StageData> stage_from_message(const aln::v1::StageExamples& message, const std::string& reader);

// Every rank of `comm` calls this with `data`: on rank 0 what it read (or the error it got), sent
// and left as it is; on the others anything, replaced by rank 0's examples or its error.
void share_stage_data(dist::Communicator& comm, absl::StatusOr<StageData>& data, std::chrono::milliseconds timeout);

}  // namespace aln::engine
