#pragma once
// Subcommands of `aln`. Each returns the process exit code: 0 success, 1 run-time failure,
// 2 bad usage or bad input (config errors, unknown flags).
#include <string>
#include <vector>

namespace aln::cli {

using Args = std::vector<std::string>;

int run_train(const Args& args);
int run_version(const Args& args);
int run_data(const Args& args);
// `aln data inspect|validate` on a rollout dump (a file or the rollouts folder); `show` samples.
int inspect_rollouts(const std::string& path, bool validate, int show);
int run_generate(const Args& args);
int run_eval(const Args& args);
int run_convert(const Args& args);

// examples/quickstart.yaml, embedded at build time.
const char* default_job_yaml();

// Versions of everything this binary was built with and loads at run time.
std::string version_report();

}  // namespace aln::cli
