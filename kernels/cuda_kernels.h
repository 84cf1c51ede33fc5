#pragma once
// Host entry points of Aln's CUDA kernels. Declared the same whether or not CUDA was compiled in:
// without it (ALN_WITH_CUDA=OFF or no nvcc) a stub returns a clear error, so callers always link.
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aln::kernels::cuda {

// True when this build contains the CUDA kernels.
bool compiled();

// Number of usable devices; 0 with `reason` filled when there is none (no driver, no GPU, no CUDA).
int device_count(std::string* reason);

// One device's name and memory (bytes free and in total); an error when it cannot be read. Makes
// `device` this thread's current CUDA device (a rank reads its own GPU).
struct DeviceInfo {
  std::string name;
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};
absl::StatusOr<DeviceInfo> device_info(int device);

// Device pointers; rows x vocab float32 logits, int64 targets, float32 out. `stream` is a
// cudaStream_t (void* keeps CUDA headers out of this interface); nullptr = default stream.
absl::Status token_logprobs_f32(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* out,
                                void* stream);

// The elementwise half of the fused projection + log-softmax over one vocabulary tile [start, start +
// size) (kernels/fused_logprobs.cpp; the CPU twin is core/model/tile_softmax.h, the arithmetic
// kernels/fused_tile_math.h). Device pointers: `logits` n rows of `size` values, row stride `ld`, in
// `dtype`; targets int64 [n]; the float32 row states [n]. `stream`: a cudaStream_t, nullptr = default.
// tile_logsumexp folds the tile into running_max/running_sum and adds the picked logit (/ temperature);
// tile_softmax_grad overwrites the logits with d(picked - lse)/d logit times grad, in their dtype.
enum class TileDtype { kFloat32, kBFloat16 };
absl::Status tile_logsumexp(const void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                            const int64_t* targets, int64_t start, float* running_max, float* running_sum,
                            float* picked, void* stream);
absl::Status tile_softmax_grad(void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                               const int64_t* targets, int64_t start, const float* lse, const float* grad,
                               void* stream);

// Convenience for tests and benchmarks: copies host arrays to the device, runs, copies back.
absl::Status token_logprobs_f32_host(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab,
                                     float* out);

}  // namespace aln::kernels::cuda
