#include "core/optim/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace aln::optim {
namespace {

// Parameter `name`'s moment in `moments`: zeros at its first step; one read from a checkpoint
// (on the host) follows the parameter to its device once.
at::Tensor& moment(TensorMap& moments, const std::string& name, const at::Tensor& p) {
  at::Tensor& m = moments[name];
  if (!m.defined()) {
    m = at::zeros_like(p);
  } else if (m.device() != p.device()) {
    m = m.to(p.device());
  }
  return m;
}

}  // namespace

void AdamW::step(TensorMap& params, double lr) {
  at::NoGradGuard no_grad;
  ++steps_;
  const double bias1 = 1 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double bias2 = 1 - std::pow(options_.beta2, static_cast<double>(steps_));
  if (options_.fused) {
    fused_step(params, lr);
    return;
  }
  for (auto& [name, p] : params) {
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    at::Tensor& m = moment(exp_avg_, name, p);
    at::Tensor& v = moment(exp_avg_sq_, name, p);
    // Same operation order as torch.optim.AdamW (single-tensor path) so results agree closely.
    // Every operation is elementwise, so a chunk at a time gives the same bits; what it saves is
    // the whole-size temporaries of the denominator (two of 103 MB for an embedding of the GPT-2
    // vocabulary at hidden 512), and each chunk's five passes run while it is in cache.
    const double step_size = lr / bias1;
    const auto update = [&](at::Tensor w, const at::Tensor& dw, at::Tensor avg, at::Tensor avg_sq) {
      w.mul_(1 - lr * options_.weight_decay);
      avg.lerp_(dw, 1 - options_.beta1);
      avg_sq.mul_(options_.beta2).addcmul_(dw, dw, 1 - options_.beta2);
      at::Tensor denom = (avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
      w.addcdiv_(avg, denom, -step_size);
    };
    constexpr int64_t kChunk = int64_t{1} << 18;
    const bool chunked = p.numel() > kChunk && p.is_contiguous() && g.is_contiguous() && m.is_contiguous() &&
                         v.is_contiguous() && g.sizes() == p.sizes();
    if (!chunked) {
      update(p, g, m, v);
      continue;
    }
    const at::Tensor pf = p.view({-1}), gf = g.view({-1}), mf = m.view({-1}), vf = v.view({-1});
    for (int64_t start = 0; start < pf.numel(); start += kChunk) {
      const int64_t n = std::min(kChunk, pf.numel() - start);
      update(pf.narrow(0, start, n), gf.narrow(0, start, n), mf.narrow(0, start, n), vf.narrow(0, start, n));
    }
  }
}

void AdamW::fused_step(TensorMap& params, double lr) {
  // One call per (device, dtype) group, as torch.optim groups them; the step count as each group's
  // device tensor (the kernel reads it for the bias corrections).
  struct Group {
    std::vector<at::Tensor> p, g, m, v;
  };
  std::map<std::pair<std::string, at::ScalarType>, Group> groups;
  for (auto& [name, p] : params) {
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    at::Tensor& m = moment(exp_avg_, name, p);
    at::Tensor& v = moment(exp_avg_sq_, name, p);
    Group& group = groups[{p.device().str(), p.scalar_type()}];
    group.p.push_back(p);
    group.g.push_back(g);
    group.m.push_back(m);
    group.v.push_back(v);
  }
  for (auto& [key, group] : groups) {
    const at::Tensor step = at::full({}, static_cast<double>(steps_), group.p.front().options().dtype(at::kFloat));
    const std::vector<at::Tensor> steps(group.p.size(), step);
    at::_fused_adamw_(group.p, group.g, group.m, group.v, {}, steps, lr, options_.beta1, options_.beta2,
                      options_.weight_decay, options_.eps, /*amsgrad=*/false, /*maximize=*/false);
  }
}

TensorMap AdamW::state() const {
  TensorMap out;
  for (const auto& [name, t] : exp_avg_) out[name + ".exp_avg"] = t;
  for (const auto& [name, t] : exp_avg_sq_) out[name + ".exp_avg_sq"] = t;
  out["step"] = at::scalar_tensor(steps_, at::kLong);
  return out;
}

void AdamW::load_state(const TensorMap& state) {
  exp_avg_.clear();
  exp_avg_sq_.clear();
  for (const auto& [key, t] : state) {
    if (key == "step") {
      steps_ = t.item<int64_t>();
    } else if (key.size() > 8 && key.compare(key.size() - 8, 8, ".exp_avg") == 0) {
      exp_avg_[key.substr(0, key.size() - 8)] = t.clone();
    } else if (key.size() > 11 && key.compare(key.size() - 11, 11, ".exp_avg_sq") == 0) {
      exp_avg_sq_[key.substr(0, key.size() - 11)] = t.clone();
    } else {
      ALN_FAIL("unknown optimizer state entry '", key, "'");
    }
  }
}

double scheduled_lr(ScheduleKind kind, double base_lr, int64_t step, int64_t warmup, int64_t total,
                    WarmupStart start) {
  if (warmup > 0 && step < warmup) {
    const int64_t done = start == WarmupStart::kStartAtZero ? step : step + 1;
    return base_lr * static_cast<double>(done) / static_cast<double>(warmup);
  }
  if (kind == ScheduleKind::kConstant || total <= warmup) return base_lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  if (kind == ScheduleKind::kLinear) return base_lr * (1.0 - progress);
  return base_lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

double clip_grad_norm(TensorMap& params, double max_norm) { return clip_grad_norm(params, max_norm, nullptr, ""); }

double clip_grad_norm(TensorMap& params, double max_norm, const std::function<double(double)>& total_of,
                      const std::string& not_counted) {
  std::function<void(at::Tensor&)> total;
  if (total_of) total = [&](at::Tensor& t) { t.fill_(total_of(t.item<double>())); };
  return clip_grad_norm_on_device(params, max_norm, total, not_counted).item<double>();
}

at::Tensor clip_scale(const at::Tensor& norm, double max_norm) {
  const at::Tensor clip = at::logical_and(at::isfinite(norm), norm > max_norm);
  return at::where(clip, at::full_like(norm, max_norm).div(norm + 1e-6), at::ones_like(norm));
}

at::Tensor sum_of_squares(const at::Tensor& g) {
  // On a GPU fewer, larger chunks: each is a few kernel launches, and its memory is what matters.
  const int64_t chunk = g.is_cpu() ? int64_t{1} << 20 : int64_t{1} << 24;
  const at::Tensor flat = g.reshape({-1});
  at::Tensor sum;
  for (int64_t start = 0; start < flat.numel(); start += chunk) {
    // square(), not in place: a float64 gradient's chunk is the gradient itself, not a copy.
    at::Tensor part = flat.narrow(0, start, std::min(chunk, flat.numel() - start)).to(at::kDouble).square().sum();
    sum = sum.defined() ? sum + part : part;
  }
  return sum.defined() ? sum : at::zeros({}, g.options().dtype(at::kDouble));
}

at::Tensor clip_grad_norm_on_device(TensorMap& params, double max_norm, const std::function<void(at::Tensor&)>& total,
                                    const std::string& not_counted) {
  at::NoGradGuard no_grad;
  // Each gradient's sum of squares in float64, added one by one in name order (the order, and so
  // the bits, do not depend on how many there are or where they live).
  at::Tensor sum;
  at::TensorOptions options = at::TensorOptions().dtype(at::kDouble);
  for (const auto& [name, p] : params) {
    if (!p.grad().defined()) continue;
    options = options.device(p.grad().device());
    if (name == not_counted) continue;
    at::Tensor square = sum_of_squares(p.grad());
    sum = sum.defined() ? sum + square : square;
  }
  if (!sum.defined()) sum = at::zeros({}, options);
  sum = sum.reshape({1});
  if (total) total(sum);
  const at::Tensor norm = sum.sqrt().reshape({});
  if (max_norm > 0) {
    const at::Tensor scale = clip_scale(norm, max_norm);
    for (auto& [name, p] : params) {
      if (p.grad().defined()) p.mutable_grad().mul_(scale);
    }
  }
  return norm;
}

}  // namespace aln::optim
