#pragma once
// Where a job's models and tensors live (runtime.device). The CPU needs nothing; CUDA needs
// LibTorch's CUDA backend (libtorch_cuda), which this build does not link: it is loaded into the
// process only when a job asks for a GPU. Why on demand: the backend adds about 0.15 s and 370 MB
// of resident memory to every process that loads it (measured here, bench-free: a dlopen of the
// wheel's libtorch_cuda.so), which every CPU rank, test and CLI call would otherwise pay, and a
// CPU-only LibTorch has no such library at all. Once loaded, ATen dispatches CUDA tensors to it as
// if it had been linked (its kernels register themselves as the library loads).
#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace aln::model {

// Loads LibTorch's CUDA backend into this process (once; later calls return the first result).
// Must run before anything asks ATen about CUDA: ATen decides once per process whether CUDA
// exists. Errors name the library and say what to do.
absl::Status load_cuda_backend();

// The GPU a rank uses: its node-local rank modulo the devices visible (ranks beyond the device count
// share devices, which the MPI backend allows and NCCL does not). Loads the backend; errors when
// there is no device.
absl::StatusOr<c10::Device> cuda_device_for(int node_local_rank);

}  // namespace aln::model
