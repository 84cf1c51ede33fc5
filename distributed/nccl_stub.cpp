// Compiled when the build has no CUDA/NCCL, so callers always link.
#include "distributed/nccl_info.h"

namespace aln::dist {
bool nccl_compiled() { return false; }
std::string nccl_version() { return "not built (ALN_WITH_CUDA=OFF or no CUDA toolkit)"; }
}  // namespace aln::dist
