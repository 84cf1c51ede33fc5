#include "core/model/device.h"

#include <dlfcn.h>

#include <ATen/Context.h>

#include <mutex>

#include "absl/strings/str_cat.h"

// Set by CMake for this file; a compile without it (scripts/check_aarch64.sh) searches the loader's
// path only.
#ifndef ALN_TORCH_LIB_DIR
#define ALN_TORCH_LIB_DIR "."
#endif

namespace aln::model {
namespace {

// The library that holds LibTorch's CUDA kernels, next to the libtorch_cpu this build linked
// (ALN_TORCH_LIB_DIR, set by CMake); then wherever the loader's search path finds one.
absl::Status load_once() {
  const std::string beside = absl::StrCat(ALN_TORCH_LIB_DIR, "/libtorch_cuda.so");
  std::string errors;
  for (const std::string& path : {beside, std::string("libtorch_cuda.so")}) {
    // RTLD_GLOBAL: ATen's CUDA symbols must be visible to what loads after (libtorch_cuda_linalg).
    // The handle is never closed: kernels registered with the dispatcher live as long as the process.
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) return absl::OkStatus();
    const char* why = dlerror();
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", why != nullptr ? why : path);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "runtime.device: cuda needs LibTorch's CUDA backend, and it could not be loaded (", errors,
      "). Build Aln against a CUDA build of LibTorch (-DTorch_DIR=<libtorch>/share/cmake/Torch; the pip wheel of "
      "scripts/setup.sh is one) or set runtime.device: cpu"));
}

}  // namespace

absl::Status load_cuda_backend() {
  // One process, one load: loading is idempotent in the dynamic loader, but the first error is the
  // useful one to repeat.
  static std::once_flag once;
  static absl::Status loaded;
  std::call_once(once, [] { loaded = load_once(); });
  return loaded;
}

absl::StatusOr<c10::Device> cuda_device_for(int node_local_rank) {
  if (absl::Status s = load_cuda_backend(); !s.ok()) return s;
  if (!at::hasCUDA()) {
    return absl::FailedPreconditionError(
        "runtime.device: cuda, but LibTorch sees no CUDA device here (no GPU, no driver, or CUDA_VISIBLE_DEVICES "
        "hides them; `nvidia-smi` shows what the driver sees); set runtime.device: cpu to train on the CPU");
  }
  const int devices = static_cast<int>(at::getNumGPUs());
  if (devices <= 0) return absl::FailedPreconditionError("runtime.device: cuda, but no CUDA device is visible");
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(node_local_rank % devices));
}

}  // namespace aln::model
