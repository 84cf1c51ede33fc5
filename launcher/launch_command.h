#pragma once
// The command line a job is started with: a template split into words on whitespace, each
// {placeholder} replaced. No shell is involved, so spec paths with spaces stay one word.
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aln::launcher {

// The template used when --launch-template is not given: `aln train` for one process, mpirun for more.
std::string default_launch_template(int world_size);

// Errors name an unknown or unclosed placeholder.
absl::StatusOr<std::vector<std::string>> expand_launch_template(const std::string& templ,
                                                                const std::map<std::string, std::string>& values);

}  // namespace aln::launcher
