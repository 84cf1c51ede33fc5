#pragma once
// Append-only JSON-lines logs of a run: <output_dir>/train_log.jsonl (one line per optimizer step)
// and <output_dir>/eval.jsonl (one line per evaluation). Each line is flushed as it is written, so
// a killed run keeps every line it finished.
#include <cstdint>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"

namespace aln::engine {

class JsonlLog {
 public:
  // Opens `path` for appending (creating its directory). With `keep_through_step` >= 0 it first
  // drops the lines whose "global_step" is larger: a resumed run redoes those steps, and keeping
  // both versions would make the log say two things about one step. The rewrite is atomic.
  static absl::StatusOr<JsonlLog> open(const std::string& path, int64_t keep_through_step);

  // `json` is one JSON object without a newline.
  absl::Status append(const std::string& json);
  const std::string& path() const { return path_; }

 private:
  JsonlLog(std::string path, std::ofstream out) : path_(std::move(path)), out_(std::move(out)) {}
  std::string path_;
  std::ofstream out_;
};

}  // namespace aln::engine
