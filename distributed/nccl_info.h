#pragma once
// What the build knows about NCCL. The NCCL communicator itself lands with the distributed runtime;
// this part links NCCL in every CUDA build so the dependency is exercised now.
#include <string>

namespace aln::dist {
// "2.28.3" from ncclGetVersion (works without a GPU), or why there is none.
std::string nccl_version();
bool nccl_compiled();
}  // namespace aln::dist
