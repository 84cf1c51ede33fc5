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
  int current = 0;
  err = cudaGetDevice(&current);
  if (err == cudaSuccess && current != device) err = cudaSetDevice(device);
  size_t free_b = 0, total_b = 0;
  if (err == cudaSuccess) err = cudaMemGetInfo(&free_b, &total_b);
  if (current != device) cudaSetDevice(current);  // leave the caller's device as it was
  if (err != cudaSuccess) {
    cudaGetLastError();
    return static_cast<int>(err);
  }
  *free_bytes = static_cast<int64_t>(free_b);
  *total_bytes = static_cast<int64_t>(total_b);
  return 0;
}

}  // namespace aln::kernels::cuda::detail
