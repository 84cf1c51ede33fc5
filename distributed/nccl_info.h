#pragma once
// What the build knows about NCCL (the communicator itself: nccl_backend.h).
#include <string>

namespace aln::dist {
// "2.28.3" from ncclGetVersion (works without a GPU), or why there is none.
std::string nccl_version();
bool nccl_compiled();
}  // namespace aln::dist
