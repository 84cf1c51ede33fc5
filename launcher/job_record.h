#pragma once
// One job as the launcher keeps it: what it reports (JobStatus) plus what it needs to run, stop
// and re-attach to the job (spec, working directory, process group).
#include <cstdint>
#include <string>

#include "aln/v1/launcher.pb.h"

namespace aln::launcher {

struct JobRecord {
  aln::v1::JobStatus status;    // job_id, user, state, exit code, progress, ...
  int64_t seq = 0;              // submission order (queue order; ids are derived from it)
  std::string spec_yaml;        // the job as submitted
  std::string workdir;          // where it runs
  int metrics_port = 0;         // its /metrics port while it runs
  int64_t pgid = 0;             // process group (= pid of the group leader) while it runs
  int64_t start_ticks = 0;      // the leader's start time (/proc/PID/stat), tells a reused pid apart
  int64_t progress_offset = 0;  // bytes of train_log.jsonl already read
};

bool is_terminal(aln::v1::JobState state);

}  // namespace aln::launcher
