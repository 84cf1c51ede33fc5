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

// Convenience for tests and benchmarks: copies host arrays to the device, runs, copies back.
absl::Status token_logprobs_f32_host(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab,
                                     float* out);

}  // namespace aln::kernels::cuda
