// Status-returning wrappers over the nvcc-compiled launchers (kernels/cuda/cuda_launch.h).
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda_kernels.h"

namespace aln::kernels::cuda {
namespace {

absl::Status check(int code, const char* what) {
  if (code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA error in ", what, ": ", detail::error_string(code)));
}

// RAII over one device allocation.
struct DeviceBuffer {
  void* ptr = nullptr;
  ~DeviceBuffer() {
    if (ptr != nullptr) detail::device_free(ptr);
  }
};

}  // namespace

bool compiled() { return true; }

int device_count(std::string* reason) {
  int count = 0;
  const int err = detail::get_device_count(&count);
  if (err != 0) {
    if (reason != nullptr) *reason = detail::error_string(err);
    return 0;
  }
  if (count == 0 && reason != nullptr) *reason = "no CUDA device";
  return count;
}

absl::StatusOr<DeviceInfo> device_info(int device) {
  DeviceInfo info;
  char name[256] = {0};
  if (absl::Status s = check(detail::device_info(device, &info.free_bytes, &info.total_bytes, name, sizeof(name)),
                             "cudaGetDeviceProperties/cudaMemGetInfo");
      !s.ok()) {
    return s;
  }
  info.name = name;
  return info;
}

absl::Status token_logprobs_f32(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* out,
                                void* stream) {
  if (rows == 0) return absl::OkStatus();
  if (vocab <= 0) return absl::InvalidArgumentError("token_logprobs_f32: vocab must be positive");
  if (rows > 2147483647LL) return absl::InvalidArgumentError("token_logprobs_f32: too many rows for one launch");
  return check(detail::launch_token_logprobs_f32(logits, targets, rows, vocab, out, stream), "token_logprobs launch");
}

namespace {
detail::TileDtype device_dtype(TileDtype d) {
  switch (d) {
    case TileDtype::kBFloat16:
      return detail::TileDtype::kBFloat16;
    case TileDtype::kFloat32:
      break;
  }
  return detail::TileDtype::kFloat32;
}

absl::Status check_tile(int64_t n, int64_t size, int64_t ld) {
  if (size <= 0 || ld < size)
    return absl::InvalidArgumentError(absl::StrCat("tile of ", size, " columns, stride ", ld));
  if (n > 2147483647LL) return absl::InvalidArgumentError("too many rows for one launch");
  if ((size + detail::kTileGradColumnsPerBlock - 1) / detail::kTileGradColumnsPerBlock > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("a tile of ", size, " columns is wider than one launch covers"));
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status tile_logsumexp(const void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                            const int64_t* targets, int64_t start, float* running_max, float* running_sum,
                            float* picked, void* stream) {
  if (n == 0) return absl::OkStatus();
  if (absl::Status s = check_tile(n, size, ld); !s.ok()) return s;
  return check(detail::launch_tile_logsumexp(logits, device_dtype(dtype), n, size, ld, temperature, targets, start,
                                             running_max, running_sum, picked, stream),
               "tile_logsumexp launch");
}

absl::Status tile_softmax_grad(void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                               const int64_t* targets, int64_t start, const float* lse, const float* grad,
                               void* stream) {
  if (n == 0) return absl::OkStatus();
  if (absl::Status s = check_tile(n, size, ld); !s.ok()) return s;
  return check(detail::launch_tile_softmax_grad(logits, device_dtype(dtype), n, size, ld, temperature, targets, start,
                                                lse, grad, stream),
               "tile_softmax_grad launch");
}

absl::Status token_logprobs_f32_host(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab,
                                     float* out) {
  for (int64_t i = 0; i < rows; ++i) {
    if (targets[i] < 0 || targets[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("target ", targets[i], " of row ", i, " is outside [0, ", vocab, ")"));
    }
  }
  DeviceBuffer d_logits, d_targets, d_out;
  absl::Status s = check(detail::device_alloc(&d_logits.ptr, int64_t(sizeof(float)) * rows * vocab), "cudaMalloc");
  if (s.ok()) s = check(detail::device_alloc(&d_targets.ptr, int64_t(sizeof(int64_t)) * rows), "cudaMalloc");
  if (s.ok()) s = check(detail::device_alloc(&d_out.ptr, int64_t(sizeof(float)) * rows), "cudaMalloc");
  if (s.ok()) s = check(detail::copy_to_device(d_logits.ptr, logits, int64_t(sizeof(float)) * rows * vocab), "copy");
  if (s.ok()) s = check(detail::copy_to_device(d_targets.ptr, targets, int64_t(sizeof(int64_t)) * rows), "copy");
  if (s.ok()) {
    s = token_logprobs_f32(static_cast<const float*>(d_logits.ptr), static_cast<const int64_t*>(d_targets.ptr), rows,
                           vocab, static_cast<float*>(d_out.ptr), nullptr);
  }
  if (s.ok()) s = check(detail::copy_to_host(out, d_out.ptr, int64_t(sizeof(float)) * rows), "copy back");
  return s;
}

}  // namespace aln::kernels::cuda
