#include "distributed/nccl_info.h"

#include <nccl.h>

#include "absl/strings/str_cat.h"

namespace aln::dist {
bool nccl_compiled() { return true; }
std::string nccl_version() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "unavailable (ncclGetVersion failed)";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return absl::StrCat(version / 10000, ".", (version % 10000) / 100, ".", version % 100);
}
}  // namespace aln::dist
