#include "trainers/engine/sharded_adamw.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "core/error.h"
#include "core/status.h"
#include "trainers/engine/fully_sharded.h"

namespace aln::engine {

ShardedAdamW::ShardedAdamW(optim::AdamWOptions options, const DataParallel& dp, Sharding sharding,
                           const optim::TensorMap& params, FullySharded* full)
    : dp_(dp), sharding_(dp.size() > 1 ? sharding : Sharding::kNone), full_(full), adam_(options) {
  ALN_CHECK((sharding_ == Sharding::kFull) == (full_ != nullptr),
            "sharded AdamW: fully sharded parameters come with their FullySharded, and only they");
  if (full_ != nullptr) return;
  const bool shard = sharded();
  for (const auto& [name, t] : params) {
    shapes_[name] = t.sizes().vec();
    start_[name] = total_;
    total_ += t.numel();
  }
  const int64_t ranks = shard ? dp.size() : 1;
  width_ = (total_ + ranks - 1) / ranks;
  const int64_t lo = shard ? std::min(total_, dp.rank() * width_) : 0;
  const int64_t hi = std::min(total_, lo + width_);
  lo_ = lo;
  for (const auto& [name, t] : params) {
    const int64_t a = std::max(lo, start_[name]), b = std::min(hi, start_[name] + t.numel());
    if (a < b) slices_[name] = {a - start_[name], b - a};
  }
}

optim::TensorMap ShardedAdamW::owned(optim::TensorMap& params) const {
  optim::TensorMap out;
  for (auto& [name, p] : params) {
    auto it = slices_.find(name);
    if (it == slices_.end()) continue;
    // Views into the parameter's and the gradient's storage: AdamW updates the parameter in place.
    at::Tensor view = p.detach().view(-1).narrow(0, it->second.offset, it->second.count);
    if (shards_gradients()) {
      // Every parameter of the range has a summed gradient there (zeros where a rank had none, as
      // the all-reduce gives).
      if (!grad_range_.defined()) continue;
      view.mutable_grad() = grad_range_.narrow(0, start_.at(name) + it->second.offset - lo_, it->second.count);
    } else {
      if (!p.grad().defined()) continue;
      view.mutable_grad() = p.grad().view(-1).narrow(0, it->second.offset, it->second.count);
    }
    out.emplace(name, view);
  }
  return out;
}

void ShardedAdamW::copy_flat_gradients(const std::vector<FlatEntry>& flat, int64_t first, at::Tensor out) const {
  out.zero_();
  const int64_t last = first + out.numel();
  // The first parameter ending after `first` (entries are in flat order), then on while they overlap.
  auto it = std::upper_bound(flat.begin(), flat.end(), first,
                             [](int64_t x, const FlatEntry& e) { return x < e.start + e.param->numel(); });
  for (; it != flat.end() && it->start < last; ++it) {
    const at::Tensor& p = *it->param;
    const int64_t a = std::max(first, it->start), b = std::min(last, it->start + p.numel());
    if (a >= b || !p.grad().defined()) continue;
    out.narrow(0, a - first, b - a).copy_(p.grad().reshape(-1).narrow(0, a - it->start, b - a));
  }
}

void ShardedAdamW::reduce_scatter_gradients(optim::TensorMap& params, bool deterministic, int64_t bucket_bytes) {
  ALN_CHECK(shards_gradients(), "reduce_scatter_gradients without parallel.policy.shard: gradients");
  ALN_CHECK(!params.empty(), "ZeRO-2 gradient sum with no parameters");
  at::NoGradGuard no_grad;
  const int64_t ranks = dp_.size();
  const at::TensorOptions options = params.begin()->second.options().dtype(at::kFloat);
  grad_range_ = at::empty({width_}, options);
  // Bucket k holds, for every rank r, elements [k * chunk, (k + 1) * chunk) of r's range: the
  // input a reduce-scatter cuts into one block per rank.
  const int64_t chunk = std::clamp<int64_t>(bucket_bytes / 4 / ranks, 1, std::max<int64_t>(width_, 1));
  std::vector<FlatEntry> flat;  // the parameters in flat order, for the packing's binary search
  flat.reserve(params.size());
  for (const auto& [name, p] : params) flat.push_back({start_.at(name), &p});
  struct Bucket {
    at::Tensor input, gathered, out;
    std::unique_ptr<dist::Work> work;
  };
  auto finish = [&](Bucket& b) {
    ALN_THROW_IF_ERROR(b.work->wait(dp_.timeout()));
    if (deterministic) {
      // Block rank() of every rank's bucket, added rank by rank.
      const int64_t n = b.out.numel();
      at::Tensor mine = b.gathered.view({ranks, ranks, n}).select(1, dp_.rank()).contiguous().view(-1);
      dp_.add_in_rank_order(mine, b.out);
    }
  };
  std::vector<Bucket> in_flight;
  for (int64_t off = 0; off < width_; off += chunk) {
    const int64_t n = std::min(chunk, width_ - off);
    Bucket b;
    b.input = at::empty({ranks * n}, options);
    for (int64_t r = 0; r < ranks; ++r) copy_flat_gradients(flat, r * width_ + off, b.input.narrow(0, r * n, n));
    b.out = grad_range_.narrow(0, off, n);
    if (deterministic) {
      b.gathered = at::empty({ranks * b.input.numel()}, options);
      b.work = dp_.start_all_gather(b.input, b.gathered);
    } else {
      b.work = dp_.start_reduce_scatter(b.input, b.out);
    }
    in_flight.push_back(std::move(b));
    if (in_flight.size() == 2) {
      finish(in_flight.front());
      in_flight.erase(in_flight.begin());
    }
  }
  for (Bucket& b : in_flight) finish(b);
  for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
}

at::Tensor ShardedAdamW::clip_grad_norm(optim::TensorMap& params, double max_norm,
                                        const std::function<void(at::Tensor&)>& total, const std::string& not_counted) {
  if (full_ != nullptr) {
    // This rank's part of every parameter's summed gradient; the squares' sums added over ranks.
    ALN_CHECK(not_counted.empty() && !total, "fully sharded clipping does not run on pipeline stages");
    optim::TensorMap mine = full_->owned();
    return optim::clip_grad_norm_on_device(mine, max_norm, [this](at::Tensor& t) { dp_.sum(t); }, "");
  }
  if (!shards_gradients()) return optim::clip_grad_norm_on_device(params, max_norm, total, not_counted);
  ALN_CHECK(not_counted.empty() && !total, "ZeRO-2 clipping does not run on pipeline stages");
  at::NoGradGuard no_grad;
  ALN_CHECK(grad_range_.defined(), "ZeRO-2 clipping before the gradients were reduce-scattered");
  // This rank's range squared and summed in float64, then the ranks' sums added: the unsharded
  // per-parameter sum in another order (padding past the end is zero).
  at::Tensor sum = optim::sum_of_squares(grad_range_).reshape({1});
  dp_.sum(sum);
  const at::Tensor norm = sum.sqrt().reshape({});
  if (max_norm > 0) grad_range_.mul_(optim::clip_scale(norm, max_norm));
  return norm;
}

void ShardedAdamW::clear_gradients(optim::TensorMap& params) {
  if (full_ != nullptr) {
    full_->clear_gradients();
    return;
  }
  for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
  grad_range_ = at::Tensor();
}

int64_t ShardedAdamW::gradient_bytes() const {
  if (full_ != nullptr) return full_->shard_bytes();
  return (shards_gradients() ? width_ : total_) * 4; }

void ShardedAdamW::step(optim::TensorMap& params, double lr) {
  if (!sharded()) {
    adam_.step(params, lr);
    return;
  }
  if (full_ != nullptr) {
    optim::TensorMap mine = full_->owned();
    adam_.step(mine, lr);
    return;
  }
  optim::TensorMap mine = owned(params);
  adam_.step(mine, lr);
  // All-gather the updated ranges (each padded to width_) and copy the others' into place.
  at::NoGradGuard no_grad;
  ALN_CHECK(!params.empty(), "sharded AdamW step with no parameters");
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
  if (!sharded()) return local;
  if (full_ != nullptr) {
    // Rank 0 alone holds the whole moments (it writes them); the others keep only "step".
    optim::TensorMap out = full_->assemble(local, ".exp_avg", /*lead_only=*/true);
    out.merge(full_->assemble(local, ".exp_avg_sq", /*lead_only=*/true));
    out["step"] = local.at("step");
    return out;
  }
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
  if (!sharded()) {
    adam_.load_state(state);
    return;
  }
  if (full_ != nullptr) {
    optim::TensorMap mine = full_->cut(state, ".exp_avg");
    mine.merge(full_->cut(state, ".exp_avg_sq"));
    auto step = state.find("step");
    if (step != state.end()) mine.emplace("step", step->second);
    adam_.load_state(mine);
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
  if (full_ != nullptr) return full_->owned_share();
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
