#pragma once
// The files a job reads (models, tokenizers, data, lexicons), and the launcher's rule that a job
// reads only below the directories it is configured to allow.
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/config/job_config.h"

namespace aln::config {

struct InputPath {
  std::string key;    // key path as in error messages: "stages[1].data.train[0].path"
  std::string value;  // as written in the spec
};

// Every non-empty string field named `path`, `tokenizer` or `*_path`, found by walking the spec,
// so a field added to job.proto later is covered without a list to keep in step. Written paths
// (output_dir, checkpoint.dir, cache_dir) are confine_written_paths' business.
std::vector<InputPath> input_paths(const aln::v1::JobSpec& spec);

// Each input path, resolved against `workdir` (the job's working directory) with symlinks followed
// as far as they exist, must lie inside one of `allowed` (absolute directories). The error names
// file:line, the key path, where the value led and the allowed directories. An empty `allowed`
// allows everything (the launcher without --input-dirs).
absl::Status confine_read_paths(const LoadedJob& job, const std::string& workdir,
                                const std::vector<std::string>& allowed);

}  // namespace aln::config
