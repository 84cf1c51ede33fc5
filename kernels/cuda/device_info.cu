// What the CUDA runtime says about a device: its name and memory, for the job log and the
// "not enough memory" errors (LibTorch's allocator does not expose cudaMemGetInfo through ATen).
#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/cuda/cuda_launch.h"

namespace aln::kernels::cuda::detail {

int device_info(int device, int64_t* free_bytes, int64_t* total_bytes, char* name, int name_size) {
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return static_cast<int>(err);
  }
  if (name != nullptr && name_size > 0) std::snprintf(name, static_cast<size_t>(name_size), "%s", prop.name);
  // Makes `device` current and leaves it so: the rank asking is the one that uses it (restoring
  // device 0 would give every rank of a node a context on GPU 0). LibTorch shares this runtime
  // library (docs/build.md), so its current device is the same.
  err = cudaSetDevice(device);
  size_t free_b = 0, total_b = 0;
  if (err == cudaSuccess) err = cudaMemGetInfo(&free_b, &total_b);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return static_cast<int>(err);
  }
  *free_bytes = static_cast<int64_t>(free_b);
  *total_bytes = static_cast<int64_t>(total_b);
  return 0;
}

}  // namespace aln::kernels::cuda::detail
