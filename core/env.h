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

// ALN_CPU_KERNELS=generic turns Aln's own x86 CPU kernels (AVX-512 linear and GEMM) off, so the
// portable path (LibTorch's at::linear) runs on any CPU; `auto` (the default) uses them where the
// build targets x86 and the CPU has AVX-512. Read once per process, like the CPU's own features
// the choice goes with: the kernels sit below every model pass, where no context reaches.
enum class CpuKernels { kAuto, kGeneric };
CpuKernels cpu_kernels();

}  // namespace aln
