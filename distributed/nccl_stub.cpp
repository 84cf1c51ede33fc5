// Compiled when the build has no CUDA/NCCL, so callers always link.
#include "distributed/nccl_info.h"

namespace aln::dist {
bool nccl_compiled() { return false; }
std::string nccl_version() { return "not built (ALN_WITH_CUDA=OFF or no CUDA toolkit)"; }
}  // namespace aln::dist

#include "absl/strings/str_cat.h"
#include "distributed/nccl_backend.h"

namespace aln::dist {
absl::StatusOr<std::string> bootstrap_nccl_unique_id(Communicator&, std::chrono::milliseconds) {
  return absl::UnimplementedError("this build has no NCCL (configured without CUDA)");
}
absl::StatusOr<std::unique_ptr<Communicator>> make_nccl_communicator(Communicator&, int, std::chrono::milliseconds) {
  return absl::UnimplementedError("this build has no NCCL (configured without CUDA); use parallel.backend: mpi");
}
std::optional<int> nccl_data_type(at::ScalarType) { return std::nullopt; }
}  // namespace aln::dist
