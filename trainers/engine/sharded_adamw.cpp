#include "trainers/engine/sharded_adamw.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "core/error.h"

namespace aln::engine {

ShardedAdamW::ShardedAdamW(optim::AdamWOptions options, const DataParallel& dp, bool shard,
                           const optim::TensorMap& params)
    : dp_(dp), shard_(shard && dp.size() > 1), adam_(options) {
  for (const auto& [name, t] : params) {
    shapes_[name] = t.sizes().vec();
    start_[name] = total_;
    total_ += t.numel();
  }
  const int64_t ranks = shard_ ? dp.size() : 1;
  width_ = (total_ + ranks - 1) / ranks;
  const int64_t lo = shard_ ? std::min(total_, dp.rank() * width_) : 0;
  const int64_t hi = std::min(total_, lo + width_);
  for (const auto& [name, t] : params) {
    const int64_t a = std::max(lo, start_[name]), b = std::min(hi, start_[name] + t.numel());
    if (a < b) slices_[name] = {a - start_[name], b - a};
  }
}

optim::TensorMap ShardedAdamW::owned(optim::TensorMap& params) const {
  optim::TensorMap out;
  for (auto& [name, p] : params) {
    auto it = slices_.find(name);
    if (it == slices_.end() || !p.grad().defined()) continue;
    // Views into the parameter's and the gradient's storage: AdamW updates the parameter in place.
    at::Tensor view = p.detach().view(-1).narrow(0, it->second.offset, it->second.count);
    view.mutable_grad() = p.grad().view(-1).narrow(0, it->second.offset, it->second.count);
    out.emplace(name, view);
  }
  return out;
}

void ShardedAdamW::step(optim::TensorMap& params, double lr) {
  if (!shard_) {
    adam_.step(params, lr);
    return;
  }
  optim::TensorMap mine = owned(params);
  adam_.step(mine, lr);
  // All-gather the updated ranges (each padded to width_) and copy the others' into place.
  at::NoGradGuard no_grad;
  ALN_CHECK(!params.empty(), "ZeRO-1 step with no parameters");
  at::Tensor flat = at::zeros({width_}, params.begin()->second.options().dtype(at::kFloat));
  int64_t offset = 0;
  for (auto& [name, p] : params) {
    auto it = slices_.find(name);
    if (it == slices_.end()) continue;
    flat.narrow(0, offset, it->second.count).copy_(p.detach().view(-1).narrow(0, it->second.offset, it->second.count));
    offset += it->second.count;
  }
  const at::Tensor all = dp_.all_gather(flat).narrow(0, 0, total_);
  for (auto& [name, p] : params) p.detach().view(-1).copy_(all.narrow(0, start_.at(name), p.numel()));
}

optim::TensorMap ShardedAdamW::state() const {
  optim::TensorMap local = adam_.state();
  if (!shard_) return local;
  // Each moment's owned range (zeros where AdamW has none yet), gathered like the parameters.
  optim::TensorMap out;
  for (const char* kind : {".exp_avg", ".exp_avg_sq"}) {
    // On the moments' device (the host until AdamW has made any).
    at::Tensor flat = at::zeros({width_}, local.empty() ? at::TensorOptions().dtype(at::kFloat)
                                                        : local.begin()->second.options().dtype(at::kFloat));
    int64_t offset = 0;
    for (const auto& [name, slice] : slices_) {
      auto it = local.find(name + kind);
      if (it != local.end()) flat.narrow(0, offset, slice.count).copy_(it->second.reshape(-1));
      offset += slice.count;
    }
    const at::Tensor all = dp_.all_gather(flat).narrow(0, 0, total_);
    for (const auto& [name, shape] : shapes_) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      out[name + kind] = all.narrow(0, start_.at(name), n).view(shape).clone();
    }
  }
  out["step"] = local.at("step");
  return out;
}

void ShardedAdamW::load_state(const optim::TensorMap& state) {
  if (!shard_) {
    adam_.load_state(state);
    return;
  }
  optim::TensorMap mine;
  for (const auto& [key, t] : state) {
    if (key == "step") {
      mine.emplace(key, t);
      continue;
    }
    const bool sq = key.size() > 11 && key.compare(key.size() - 11, 11, ".exp_avg_sq") == 0;
    const bool avg = !sq && key.size() > 8 && key.compare(key.size() - 8, 8, ".exp_avg") == 0;
    ALN_CHECK(sq || avg, "unknown optimizer state entry '", key, "'");
    const std::string name = key.substr(0, key.size() - (sq ? 11 : 8));
    auto it = slices_.find(name);
    if (it == slices_.end()) continue;
    mine.emplace(key, t.reshape(-1).narrow(0, it->second.offset, it->second.count).clone());
  }
  adam_.load_state(mine);
}

double ShardedAdamW::owned_share() const {
  int64_t mine = 0;
  for (const auto& [name, slice] : slices_) mine += slice.count;
  return total_ > 0 ? static_cast<double>(mine) / static_cast<double>(total_) : 1.0;
}

int64_t ShardedAdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const auto& [key, t] : adam_.state()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

}  // namespace aln::engine
