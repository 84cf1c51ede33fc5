#include "trainers/engine/overlap.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/status.h"

namespace aln::engine {

OverlappedGradientSum::OverlappedGradientSum(const DataParallel& dp, optim::TensorMap& params, bool deterministic,
                                             int64_t bucket_bytes)
    : dp_(dp), deterministic_(deterministic) {
  buckets_.emplace_back();
  int64_t bytes = 0;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    at::Tensor& p = it->second;
    if (bytes >= bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    const int64_t offset = b.params.empty() ? 0 : b.params.back().second + b.params.back().first->numel();
    b.params.emplace_back(&p, offset);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
    total_ += p.numel() * static_cast<int64_t>(p.element_size());
  }
  for (size_t k = 0; k < buckets_.size(); ++k) {
    Bucket& b = buckets_[k];
    const auto& last = b.params.back();
    b.flat = at::zeros({last.second + last.first->numel()}, last.first->options().requires_grad(false));
    b.pending = b.params.size();
    b.filled.assign(b.params.size(), 0);
    for (size_t i = 0; i < b.params.size(); ++i) {
      at::Tensor& p = *b.params[i].first;
      const size_t id = p.register_hook([this, k, i](const at::Tensor& grad) { arrived(k, i, grad); });
      hooks_.emplace_back(p, id);
    }
  }
}

OverlappedGradientSum::~OverlappedGradientSum() {
  for (auto& [p, id] : hooks_) p.remove_hook(id);
}

void OverlappedGradientSum::arrived(size_t bucket, size_t index, const at::Tensor& incoming) {
  at::NoGradGuard no_grad;
  Bucket& b = buckets_[bucket];
  auto& [param, offset] = b.params[index];
  // What autograd is about to store: the gradient accumulated by earlier micro-batches plus this one
  // (float addition commutes, so old + new here equals autograd's in-place old += new bit for bit).
  at::Tensor slot = b.flat.narrow(0, offset, param->numel());
  if (param->grad().defined()) {
    slot.copy_(param->grad().reshape(-1));
    slot.add_(incoming.reshape(-1));
  } else {
    slot.copy_(incoming.reshape(-1));
  }
  b.filled[index] = 1;
  --b.pending;
  start_ready();
  for (size_t k = 0; k < next_; ++k) buckets_[k].work->progress();
}

void OverlappedGradientSum::start_ready() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
    start(buckets_[next_]);
    early_ += buckets_[next_].flat.numel() * static_cast<int64_t>(buckets_[next_].flat.element_size());
    ++next_;
  }
}

void OverlappedGradientSum::start(Bucket& b) {
  if (deterministic_) {
    b.gathered = at::empty({dp_.size() * b.flat.numel()}, b.flat.options());
    b.work = dp_.start_all_gather(b.flat, b.gathered);
  } else {
    b.work = dp_.start_sum(b.flat);
  }
}

void OverlappedGradientSum::finish() {
  at::NoGradGuard no_grad;
  // Parameters this backward did not reach keep what earlier micro-batches accumulated (or zeros).
  for (; next_ < buckets_.size(); ++next_) {
    Bucket& b = buckets_[next_];
    for (size_t i = 0; i < b.params.size(); ++i) {
      if (b.filled[i]) continue;
      const at::Tensor& g = b.params[i].first->grad();
      if (g.defined()) b.flat.narrow(0, b.params[i].second, g.numel()).copy_(g.reshape(-1));
    }
    start(b);
  }
  for (Bucket& b : buckets_) {
    ALN_THROW_IF_ERROR(b.work->wait(dp_.timeout()));
    if (deterministic_) {
      const int64_t n = b.flat.numel();
      b.flat.copy_(b.gathered.narrow(0, 0, n));
      for (int r = 1; r < dp_.size(); ++r) b.flat.add_(b.gathered.narrow(0, r * n, n));
    }
    for (auto& [p, offset] : b.params) {
      at::Tensor summed = b.flat.narrow(0, offset, p->numel()).view(p->sizes());
      if (p->grad().defined()) {
        p->mutable_grad().copy_(summed);
      } else {
        p->mutable_grad() = summed.clone();
      }
    }
  }
}

}  // namespace aln::engine
