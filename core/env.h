#pragma once
// The one place that reads environment variables. All of them start with ALN_ and are documented
// in docs/environment.md. Everything else receives these values explicitly.
#include <optional>
#include <string>

#include "core/logging.h"

namespace aln {

struct Environment {
  LogLevel log_level = LogLevel::kInfo;  // ALN_LOG_LEVEL=debug|info|warning|error
  std::optional<int> threads;            // ALN_NUM_THREADS: overrides runtime.threads
  std::optional<int> metrics_port;       // ALN_METRICS_PORT: overrides metrics.port
  std::string output_dir;                // ALN_OUTPUT_DIR: overrides output_dir (the launcher sets it)
  // alnctl: the launcher's address and bearer token (ALN_LAUNCHER, ALN_TOKEN, ALN_TOKEN_FILE).
  std::string launcher_address;
  std::string token;
  std::string token_file;
  // Set by mpirun/mpiexec/srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK): the only variables
  // without the ALN_ prefix we read, because the launcher, not the user, sets them.
  bool launched_by_mpi = false;
  std::string problems;  // malformed values, reported by the caller
};

Environment read_environment();

}  // namespace aln
