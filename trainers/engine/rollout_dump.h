#pragma once
// The rollout records of one stage on one data-parallel rank, written as JSON lines to
// <output_dir>/rollouts/<stage>/rank<R>.jsonl when the job sets rollouts: {dump: true}. The file is
// opened when the first records arrive (stages that sample nothing leave none), dropping the lines
// of steps a resumed run redoes. A write error is kept and reported after the step (status()), so a
// trainer's step is never interrupted by it.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/buffer/rollout_record.h"
#include "trainers/engine/run_log.h"

namespace aln::engine {

class RolloutDump {
 public:
  // `keep_through_step`: the global step of the checkpoint the job resumed from (0 when it did not).
  RolloutDump(std::string path, std::string stage, int rank, int64_t keep_through_step)
      : path_(std::move(path)), stage_(std::move(stage)), rank_(rank), keep_through_(keep_through_step) {}

  // Records sampled for the stage's step `step` (from 1), which is the job's step `global_step`.
  void add(std::vector<buffer::RolloutRecord> records, int64_t global_step, int64_t step);
  absl::Status status() const { return status_; }
  int64_t written() const { return written_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_, stage_;
  int rank_;
  int64_t keep_through_;
  std::optional<JsonlLog> log_;
  absl::Status status_;
  int64_t written_ = 0;
};

// <output_dir>/rollouts/<stage>/rank<rank>.jsonl
std::string rollout_dump_path(const std::string& output_dir, const std::string& stage, int rank);

// Drops the records past `keep_through_step` from the stage's files of ranks `from_rank` and up
// (ranks a resumed run with fewer data-parallel ranks no longer has, or files an earlier run left),
// so the folder holds each step once. Run by the first rank where it writes: other hosts' files
// are out of its reach (their ranks trim their own as they write).
absl::Status trim_other_rank_dumps(const std::string& output_dir, const std::string& stage, int from_rank,
                                   int64_t keep_through_step);

}  // namespace aln::engine
