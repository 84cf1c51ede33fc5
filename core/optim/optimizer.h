#pragma once
// AdamW (decoupled weight decay, as torch.optim.AdamW), learning-rate schedules with linear warm-up,
// and global gradient-norm clipping. Our own implementation over named tensors so its state is a
// plain TensorMap that checkpoints save and restore bitwise, and that ZeRO-1 can shard by name.
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace aln::optim {

using TensorMap = std::map<std::string, at::Tensor>;

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // One multi-tensor update (ATen's _fused_adamw_, as torch.optim.AdamW(fused=True)) instead of
  // about eight elementwise passes per parameter: the engine's choice on GPUs, where each pass is a
  // kernel launch. The same formula in another operation order, so not the same bits as unfused.
  bool fused = false;
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions options) : options_(options) {}

  // One update of every parameter that has a gradient, with learning rate `lr` (from the schedule).
  // Parameters must be leaf tensors; updates happen in place without recording autograd history.
  void step(TensorMap& params, double lr);

  int64_t steps() const { return steps_; }
  // State for checkpoints: "<name>.exp_avg", "<name>.exp_avg_sq" and "step" (int64 scalar).
  TensorMap state() const;
  void load_state(const TensorMap& state);

 private:
  void fused_step(TensorMap& params, double lr);

  AdamWOptions options_;
  int64_t steps_ = 0;
  TensorMap exp_avg_;
  TensorMap exp_avg_sq_;
};

enum class ScheduleKind { kConstant, kLinear, kCosine };

// Where the linear warm-up starts. kFirstStepNonzero: lr*(s+1)/W, so step 0 already trains and step
// W-1 reaches the full lr. kStartAtZero: lr*s/W, transformers' get_*_schedule_with_warmup (and so
// TRL's trainers): step 0 runs at lr 0 and step W reaches the full lr. After warm-up both decay alike.
enum class WarmupStart { kFirstStepNonzero, kStartAtZero };

// lr at `step` (0-based): linear warm-up from 0 over `warmup` steps, then constant, linear decay to 0,
// or cosine decay to 0 at `total` steps.
double scheduled_lr(ScheduleKind kind, double base_lr, int64_t step, int64_t warmup, int64_t total,
                    WarmupStart start = WarmupStart::kFirstStepNonzero);

// Scales all gradients so their global L2 norm is at most `max_norm` (0 = no clipping). Returns the
// norm before clipping (non-finite when a gradient is NaN/Inf, which callers treat as a bad step).
double clip_grad_norm(TensorMap& params, double max_norm);
// The same over parameters spread across ranks (pipeline stages): `total` turns this rank's sum of
// squared gradient entries into the sum over all ranks; `not_counted` names a tensor whose gradient
// another rank counts already (a tied embedding's second copy), scaled but not counted here.
double clip_grad_norm(TensorMap& params, double max_norm, const std::function<double(double)>& total,
                      const std::string& not_counted);
// The same without reading anything on the host: the norm comes back as a 0-dim float64 tensor on
// the gradients' device and the scaling is applied there (by 1 when the norm is within max_norm or
// not finite), so the engine reads it with the step's other scalars in one copy. `total` sums the
// 0-dim sum of squares over ranks in place (nullptr: this rank holds every parameter). Same bits
// as the host version: squares added one by one in name order, in float64.
at::Tensor clip_grad_norm_on_device(TensorMap& params, double max_norm, const std::function<void(at::Tensor&)>& total,
                                    const std::string& not_counted);
// Sum of g's squared entries in float64, as a 0-dim tensor on g's device (nothing read). Converted
// a chunk of 2^20 entries at a time (2^24 on a GPU) and the chunks' sums added in order: a whole
// float64 copy of a large gradient (the GPT-2 vocabulary's embedding at hidden 512: 206 MB, and its
// square another) set the DPO step's peak memory.
at::Tensor sum_of_squares(const at::Tensor& g);
// The factor clipping multiplies gradients by, for a 0-dim `norm` (on its device, nothing read):
// max_norm / (norm + 1e-6) when the norm is finite and above max_norm, else 1. Used by
// clip_grad_norm_on_device and by ZeRO-2's clipping of a sharded gradient.
at::Tensor clip_scale(const at::Tensor& norm, double max_norm);

}  // namespace aln::optim
