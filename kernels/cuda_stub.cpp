// Compiled instead of kernels/cuda/*.cu when the build has no CUDA, so everything still links and
// asking for a CUDA kernel gives a clear run-time message.
#include "kernels/cuda_kernels.h"

namespace aln::kernels::cuda {
namespace {
absl::Status not_built() {
  return absl::FailedPreconditionError(
      "this Aln build has no CUDA kernels (configured with ALN_WITH_CUDA=OFF or nvcc not found); "
      "rebuild with the CUDA toolkit installed");
}
}  // namespace

bool compiled() { return false; }
int device_count(std::string* reason) {
  if (reason != nullptr) *reason = "built without CUDA";
  return 0;
}
absl::StatusOr<DeviceInfo> device_info(int) { return not_built(); }
absl::Status token_logprobs_f32(const float*, const int64_t*, int64_t, int64_t, float*, void*) { return not_built(); }
absl::Status tile_logsumexp(const void*, TileDtype, int64_t, int64_t, int64_t, float, const int64_t*, int64_t, float*,
                            float*, float*, void*) {
  return not_built();
}
absl::Status tile_softmax_grad(void*, TileDtype, int64_t, int64_t, int64_t, float, const int64_t*, int64_t,
                               const float*, const float*, void*) {
  return not_built();
}
absl::Status token_logprobs_f32_host(const float*, const int64_t*, int64_t, int64_t, float*) { return not_built(); }
}  // namespace aln::kernels::cuda
