#pragma once
// Large float32 buffers kept for reuse between the passes of one model. A buffer the kernel hands a
// process for the first time is zero-filled page by page as it is first written: for the 256 MiB of
// logits of a 2048-token pass that is about a sixth of the whole pass on this project's CPU, paid
// again every pass because freeing so large a block returns it to the kernel. A model keeps the
// buffers of its no-grad linear layers here instead (up to a byte limit, 512 MiB by default), so
// repeated passes (evaluation, reference and reward scoring, prompt prefill) reuse warm memory. The
// price: that much memory stays with each model between its passes (a trained policy's pool fills
// only in generation and evaluation, whose passes have no autograd).
#include <cstddef>
#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>

namespace aln::model {

class ScratchPool {
 public:
  // Buffers from this size up come from the pool; smaller ones are left to LibTorch's allocator,
  // whose heap reuses them anyway.
  static constexpr size_t kMinBytes = size_t{1} << 20;

  // At most `max_kept_bytes` of free buffers are kept; a buffer freed beyond that goes back to the
  // system.
  explicit ScratchPool(size_t max_kept_bytes = size_t{512} << 20);

  // A [rows, cols] float32 CPU tensor with undefined contents whose memory comes back here when the
  // last tensor sharing its storage is gone: a kept buffer of at least that size (and at most twice
  // it), else a new one. Safe to call from several threads; the pool may be destroyed before the
  // tensors it handed out.
  at::Tensor empty(int64_t rows, int64_t cols);

  size_t kept_bytes() const;  // free buffers held now (tests)

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace aln::model
