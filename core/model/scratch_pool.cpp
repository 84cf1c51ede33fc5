#include "core/model/scratch_pool.h"

#include <ATen/ATen.h>

#include <map>
#include <mutex>

#include "core/model/gemm_avx512.h"

namespace aln::model {

struct ScratchPool::State {
  explicit State(size_t max) : max_kept(max) {}
  ~State() {
    for (auto& [bytes, p] : free) std::free(p);
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  std::mutex mutex;
  std::multimap<size_t, float*> free;  // capacity in bytes -> buffer
  size_t kept = 0;
  const size_t max_kept;
};

ScratchPool::ScratchPool(size_t max_kept_bytes) : state_(std::make_shared<State>(max_kept_bytes)) {}

size_t ScratchPool::kept_bytes() const {
  const std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->kept;
}

at::Tensor ScratchPool::empty(int64_t rows, int64_t cols) {
  const size_t bytes = static_cast<size_t>(rows * cols) * sizeof(float);
  if (bytes < kMinBytes) return at::empty({rows, cols}, at::kFloat);
  float* data = nullptr;
  size_t capacity = bytes;
  {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    auto it = state_->free.lower_bound(bytes);
    // (Not a much larger one: that would hold memory this pass does not need.)
    if (it != state_->free.end() && it->first <= 2 * bytes) {
      capacity = it->first;
      data = it->second;
      state_->kept -= capacity;
      state_->free.erase(it);
    }
  }
  std::unique_ptr<float, FreeDeleter> fresh;
  if (data == nullptr) {
    fresh = allocate_floats(capacity / sizeof(float));
    data = fresh.get();
  }
  // The deleter shares the state, so a tensor may outlive the pool that made it.
  auto give_back = [state = state_, capacity](void* p) {
    const std::lock_guard<std::mutex> lock(state->mutex);
    if (state->kept + capacity <= state->max_kept) {
      state->free.emplace(capacity, static_cast<float*>(p));
      state->kept += capacity;
    } else {
      std::free(p);
    }
  };
  at::Tensor out = at::from_blob(data, {rows, cols}, give_back, at::TensorOptions().dtype(at::kFloat));
  fresh.release();  // the tensor's now
  return out;
}

}  // namespace aln::model
