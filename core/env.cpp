#include "core/env.h"

#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace aln {
namespace {
std::optional<int> read_int(const char* name, std::string* problems) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  int parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed) || parsed < 0) {
    absl::StrAppend(problems, name, "='", value, "' is not a non-negative integer; ignored. ");
    return std::nullopt;
  }
  return parsed;
}
}  // namespace

Environment read_environment() {
  Environment env;
  if (const char* level = std::getenv("ALN_LOG_LEVEL"); level != nullptr && *level != '\0') {
    if (!parse_log_level(level, &env.log_level)) {
      absl::StrAppend(&env.problems, "ALN_LOG_LEVEL='", level, "' is not one of debug|info|warning|error; ignored. ");
    }
  }
  env.threads = read_int("ALN_NUM_THREADS", &env.problems);
  env.metrics_port = read_int("ALN_METRICS_PORT", &env.problems);
  if (const char* dir = std::getenv("ALN_OUTPUT_DIR"); dir != nullptr) env.output_dir = dir;
  if (const char* v = std::getenv("ALN_LAUNCHER"); v != nullptr) env.launcher_address = v;
  if (const char* v = std::getenv("ALN_TOKEN"); v != nullptr) env.token = v;
  if (const char* v = std::getenv("ALN_TOKEN_FILE"); v != nullptr) env.token_file = v;
  if (const char* v = std::getenv("ALN_CPU_KERNELS"); v != nullptr && *v != '\0') {
    if (std::string(v) != "auto" && std::string(v) != "generic") {
      absl::StrAppend(&env.problems, "ALN_CPU_KERNELS='", v, "' is not one of auto|generic; auto is used. ");
    }
  }
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) env.launched_by_mpi = true;
  }
  return env;
}

CpuKernels cpu_kernels() {
  static const CpuKernels choice = [] {
    const char* v = std::getenv("ALN_CPU_KERNELS");
    return v != nullptr && std::string(v) == "generic" ? CpuKernels::kGeneric : CpuKernels::kAuto;
  }();
  return choice;
}

}  // namespace aln
