#include "distributed/dist_error.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace aln::dist {

DistError::DistError(std::string message, int rank, std::string host, std::string op, int64_t seq, const char* file,
                     int line)
    : Error(absl::StrCat("rank ", rank, " on ", host, ": ", op, " #", seq, ": ", message), file, line),
      rank_(rank),
      host_(std::move(host)),
      op_(std::move(op)),
      seq_(seq) {}

std::string host_name() {
  char buffer[256] = {0};
  if (gethostname(buffer, sizeof(buffer) - 1) != 0) return "unknown-host";
  return buffer;
}

}  // namespace aln::dist
