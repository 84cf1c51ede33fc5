#include <torch/version.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/build_info.h"
#include "core/model/cuda_graph.h"
#include "distributed/mpi_backend.h"
#include "distributed/nccl_info.h"
#include "kernels/cuda_kernels.h"
#include "trainers/cli/commands.h"

namespace aln::cli {

std::string version_report() {
  std::string cuda;
  if (kernels::cuda::compiled()) {
    std::string reason;
    const int devices = kernels::cuda::device_count(&reason);
    // Where there is a device, whether decoding can replay CUDA graphs (loads LibTorch's CUDA backend).
    std::string graphs;
    if (devices > 0) {
      const absl::Status s = model::CudaGraph::available();
      graphs = s.ok() ? "; CUDA graphs for decoding" : absl::StrCat("; no CUDA graphs: ", s.message());
    }
    cuda = absl::StrCat(ALN_CUDA_BUILD_VERSION, " (kernels for CUDA architectures ", ALN_CUDA_ARCHITECTURES, "; ",
                        devices > 0 ? absl::StrCat(devices, " device(s)") : absl::StrCat("no device: ", reason), graphs,
                        ")");
  } else {
    cuda = "not built";
  }
  return absl::StrCat("aln ", ALN_VERSION_STRING, " (", ALN_BUILD_TYPE, ")\n",
                      "  LibTorch  ", TORCH_VERSION, "\n",
                      "  MPI       ", dist::mpi_library_version(), "\n",
                      "  gRPC      ", ALN_GRPC_VERSION_STRING, " (aln-launcher, alnctl)\n",
                      "  protobuf  ", ALN_PROTOBUF_VERSION_STRING, "\n",
                      "  CUDA      ", cuda, "\n",
                      "  NCCL      ", dist::nccl_version(), "\n");
}

int run_version(const Args&) {
  std::fputs(version_report().c_str(), stdout);
  return 0;
}

}  // namespace aln::cli
