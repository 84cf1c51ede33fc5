#pragma once
// The boundary between nvcc-compiled code and the rest: plain C++ types only, so nvcc never has to
// parse absl or LibTorch headers. Return values are cudaError_t codes (0 = success).
#include <cstdint>

namespace aln::kernels::cuda::detail {
int get_device_count(int* count);
const char* error_string(int code);
int launch_token_logprobs_f32(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* out,
                              void* stream);
// The storage type of a vocabulary tile's logits (kernels/cuda/fused_tiles.cu), and the columns of a
// row one block of its gradient kernel covers.
constexpr int64_t kTileGradColumnsPerBlock = 256 * 8;
enum class TileDtype { kFloat32, kBFloat16 };
int launch_tile_logsumexp(const void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                          const int64_t* targets, int64_t start, float* running_max, float* running_sum, float* picked,
                          void* stream);
int launch_tile_softmax_grad(void* logits, TileDtype dtype, int64_t n, int64_t size, int64_t ld, float temperature,
                             const int64_t* targets, int64_t start, const float* lse, const float* grad, void* stream);
int device_alloc(void** ptr, int64_t bytes);
int device_free(void* ptr);
int copy_to_device(void* dst, const void* src, int64_t bytes);
int copy_to_host(void* dst, const void* src, int64_t bytes);
// Name (NUL-terminated, cut to name_size) and free/total memory of `device`.
int device_info(int device, int64_t* free_bytes, int64_t* total_bytes, char* name, int name_size);
}  // namespace aln::kernels::cuda::detail
