#include "trainers/engine/overlap.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "core/status.h"

namespace aln::engine {

namespace {

// "layers.10" after "layers.2": runs of digits compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      const std::string na = a.substr(i, ie - i), nb = b.substr(j, je - j);
      if (na.size() != nb.size()) return na.size() < nb.size();  // (no leading zeros in parameter names)
      if (na != nb) return na < nb;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

std::vector<std::string> guessed_order(const optim::TensorMap& params) {
  std::vector<std::string> names;
  for (const auto& [name, p] : params) names.push_back(name);
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) { return natural_less(b, a); });
  return names;
}

}  // namespace

std::vector<std::string> GradientReadyOrder::order(const optim::TensorMap& params) const {
  return recorded_.empty() ? guessed_order(params) : recorded_;
}

void GradientReadyOrder::adopt(const std::vector<std::string>& arrivals, const optim::TensorMap& params,
                               const DataParallel& dp) {
  // As positions in name order, so the ranks can agree on rank 0's with one broadcast.
  std::vector<std::string> names;
  for (const auto& [name, p] : params) names.push_back(name);
  std::vector<int64_t> seen(names.size(), 0);
  std::vector<int64_t> positions;
  for (const std::string& name : arrivals) {
    const auto it = std::lower_bound(names.begin(), names.end(), name);
    ALN_CHECK(it != names.end() && *it == name, "gradient order: ", name, " is not a parameter");
    const auto k = static_cast<size_t>(it - names.begin());
    if (!seen[k]) positions.push_back(static_cast<int64_t>(k));
    seen[k] = 1;
  }
  for (const std::string& name : guessed_order(params)) {
    const auto k = static_cast<size_t>(std::lower_bound(names.begin(), names.end(), name) - names.begin());
    if (!seen[k]) positions.push_back(static_cast<int64_t>(k));
  }
  optim::TensorMap agreed{{"order", at::tensor(positions, at::kLong)}};
  dp.broadcast(agreed);
  const auto order = agreed.at("order").accessor<int64_t, 1>();  // once per stage, not per step
  recorded_.clear();
  for (int64_t i = 0; i < order.size(0); ++i) recorded_.push_back(names[static_cast<size_t>(order[i])]);
}

OverlappedGradientSum::OverlappedGradientSum(const DataParallel& dp, optim::TensorMap& params, bool deterministic,
                                             GradientReadyOrder* order, int64_t bucket_bytes)
    : dp_(dp), all_params_(params), deterministic_(deterministic), order_(order) {
  buckets_.emplace_back();
  int64_t bytes = 0;
  for (const std::string& name : order != nullptr ? order->order(params) : guessed_order(params)) {
    at::Tensor& p = params.at(name);
    if (bytes >= bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    const int64_t offset = b.params.empty() ? 0 : b.params.back().second + b.params.back().first->numel();
    b.params.emplace_back(&p, offset);
    b.names.push_back(name);
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
  if (order_ != nullptr && !order_->recorded()) arrivals_.push_back(b.names[index]);
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
    if (deterministic_) dp_.add_in_rank_order(b.gathered, b.flat);
    for (auto& [p, offset] : b.params) {
      at::Tensor summed = b.flat.narrow(0, offset, p->numel()).view(p->sizes());
      if (p->grad().defined()) {
        p->mutable_grad().copy_(summed);
      } else {
        p->mutable_grad() = summed.clone();
      }
    }
  }
  if (order_ != nullptr && !order_->recorded()) order_->adopt(arrivals_, all_params_, dp_);
}

std::vector<std::vector<std::string>> OverlappedGradientSum::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const Bucket& b : buckets_) out.push_back(b.names);
  return out;
}

}  // namespace aln::engine
