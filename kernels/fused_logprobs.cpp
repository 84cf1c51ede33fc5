#include "kernels/fused_logprobs.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/version.h>
// The one kernel with a backward of its own: the autograd Function API lives outside ATen.
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "core/error.h"
#include "core/model/gemm_avx512.h"
#include "core/model/matrix_view.h"
#include "core/model/tile_softmax.h"
#include "kernels/cuda_kernels.h"

namespace aln::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kTileBytes = int64_t{8} << 20;
// On a GPU a tile is one GEMM launch and two kernel launches: tiles of 8 MiB would cut a real batch's
// projection (16k rows x 152k vocabulary) into over a thousand launches of GEMMs too thin to reach
// the device's peak. 128 MiB keeps each GEMM at least a few thousand columns wide for up to 8k rows,
// and stays small beside the device's memory (about Liger's chunk of that batch).
constexpr int64_t kCudaTileBytes = int64_t{128} << 20;

// The dtype reductions run in: float32 for half types, else the input's.
at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 ? at::kFloat : t;
}

using model::LinearProduct;

// A tile's three products are those of a linear layer with x = hidden [N, H] and W = the tile's
// rows of the projection [tile, H]: on float32 CPU operands they go through Aln's GEMM where it
// beats the BLAS for that shape (core/model/gemm_avx512.h), the BLAS elsewhere.
bool own_gemm(const at::Tensor& hidden, LinearProduct product, int64_t tile) {
  return hidden.device().is_cpu() && hidden.scalar_type() == at::kFloat &&
         model::gemm_wins(product, hidden.size(0), hidden.size(1), tile);
}

using model::matrix_of;
using model::transposed_of;

// Whether a tile's elementwise work runs as one sweep per row (core/model/tile_softmax.h): float32 on
// a CPU with the AVX-512 kernels. Elsewhere (other dtypes and devices, ALN_CPU_KERNELS=generic) ATen ops.
bool row_kernels(const at::Tensor& hidden) {
  return hidden.device().is_cpu() && hidden.scalar_type() == at::kFloat && model::gemm_avx512_available();
}

// Whether a tile's elementwise work runs in Aln's CUDA kernels (kernels/cuda/fused_tiles.cu): CUDA
// tensors in float32 or bfloat16, with the kernels compiled in (and LibTorch 2.11 or newer, whose
// streams give their native handle). The tile's logits then stay in the product's dtype (the kernels
// read bfloat16 and compute in float32), the temperature is applied inside the kernels, and the
// backward GEMMs take the gradient in that dtype (bfloat16 operands run at the tensor cores' rate;
// float32 ones at a tenth of it). Not float16: its gradient tile would flush small probabilities
// times small upstream gradients to zero without loss scaling; ATen ops in float32 take it.
bool cuda_tiles(const at::Tensor& hidden) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 11)
  return hidden.is_cuda() && (hidden.scalar_type() == at::kFloat || hidden.scalar_type() == at::kBFloat16) &&
         cuda::compiled();
#else
  return false;
#endif
}

cuda::TileDtype tile_dtype(at::ScalarType t) {
  return t == at::kBFloat16 ? cuda::TileDtype::kBFloat16 : cuda::TileDtype::kFloat32;
}

// The stream ATen queues this device's work on, so the kernels run in order with the GEMMs around
// them. Through c10's device-generic interface: this library does not link LibTorch's CUDA library,
// which a job that asks for a GPU loads at run time (core/model/device.h). The kernels launch on the
// thread's current device, which the callers set to the tensors' (c10::OptionalDeviceGuard).
void* current_stream(const at::Tensor& t) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 11)
  return c10::impl::getDeviceGuardImpl(t.device().type())->getStream(t.device()).native_handle();
#else
  (void)t;
  return nullptr;
#endif
}

void throw_unless_ok(const absl::Status& s) { ALN_CHECK(s.ok(), "fused_token_logprobs on CUDA: ", s.message()); }

// One vocabulary tile's logits [N, tile] in the compute dtype (contiguous), divided by the temperature.
at::Tensor tile_logits(const at::Tensor& hidden, const at::Tensor& weight_tile, double temperature) {
  at::Tensor logits;
  const int64_t n = hidden.size(0), h = hidden.size(1), size = weight_tile.size(0);
  if (own_gemm(hidden, LinearProduct::kForward, size)) {
    logits = at::empty({n, size}, hidden.options());
    model::gemm_avx512(matrix_of(hidden), transposed_of(weight_tile), n, h, size, logits.mutable_data_ptr<float>(),
                       size);
  } else {
    logits = at::mm(hidden, weight_tile.t()).to(compute_type(hidden.scalar_type()));
  }
  if (temperature != 1.0) logits.div_(temperature);
  return logits;
}

// grad_hidden += grad_logits W_tile.
void add_hidden_grad(at::Tensor& grad_hidden, const at::Tensor& grad_logits, const at::Tensor& w) {
  const int64_t n = grad_hidden.size(0), h = grad_hidden.size(1), size = w.size(0);
  if (own_gemm(grad_hidden, LinearProduct::kGradInput, size) && w.scalar_type() == at::kFloat) {
    model::gemm_avx512(matrix_of(grad_logits), matrix_of(w), n, size, h, grad_hidden.mutable_data_ptr<float>(), h,
                       nullptr, true);
  } else {
    grad_hidden.addmm_(grad_logits, w.to(grad_hidden.scalar_type()));
  }
}

// grad_w_tile = grad_logits^T h, written into the tile's rows of W's gradient.
void write_weight_grad(at::Tensor grad_w_tile, const at::Tensor& grad_logits, const at::Tensor& h) {
  const int64_t n = h.size(0), hd = h.size(1), size = grad_w_tile.size(0);
  if (own_gemm(h, LinearProduct::kGradWeight, size) && grad_w_tile.scalar_type() == at::kFloat &&
      grad_w_tile.is_contiguous()) {
    model::gemm_avx512(transposed_of(grad_logits), matrix_of(h), size, n, hd, grad_w_tile.mutable_data_ptr<float>(),
                       hd);
  } else {
    grad_w_tile.copy_(at::mm(grad_logits.t(), h));
  }
}

// Where each row's target falls in the tile [start, start + size): the column (clamped into the
// tile) and whether it is really there (1) or not (0). Multiplying by the flag keeps the tile's
// contribution exact (x + 0 = x) without reading anything on the host.
std::pair<at::Tensor, at::Tensor> target_in_tile(const at::Tensor& targets, int64_t start, int64_t size,
                                                 at::ScalarType ct) {
  at::Tensor local = targets - start;
  at::Tensor inside = ((local >= 0) & (local < size)).to(ct);
  return {local.clamp(0, size - 1).unsqueeze(1), inside};
}

// Tiles over the vocabulary, not the rows: the projection W [V, H] and its gradient are each
// touched once per pass, while the hidden states [N, H] (small beside them) are reused by every
// tile. The log-sum-exp runs online over the tiles (running max and rescaled sum per row).
class FusedLogprobs : public torch::autograd::Function<FusedLogprobs> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, double temperature, int64_t tile, bool keep_logits) {
    const int64_t n = hidden.size(0), vocab = weight.size(0);
    const at::ScalarType ct = compute_type(hidden.scalar_type());
    const at::TensorOptions opts = hidden.options().dtype(ct);
    at::Tensor running_max = at::full({n}, -std::numeric_limits<double>::infinity(), opts);
    at::Tensor running_sum = at::zeros({n}, opts);
    at::Tensor picked = at::zeros({n}, opts);
    const bool rows = row_kernels(hidden), device = cuda_tiles(hidden);
    c10::OptionalDeviceGuard on_device;  // the kernels launch on the current device: the tensors'
    if (device) on_device.reset_device(hidden.device());
    for (int64_t start = 0; start < vocab; start += tile) {
      const int64_t size = std::min(tile, vocab - start);
      if (device) {  // the product's dtype; the temperature is applied in the kernel
        const at::Tensor logits = at::mm(hidden, weight.narrow(0, start, size).t());
        if (keep_logits) ctx->saved_data["logits"] = logits;
        throw_unless_ok(
            cuda::tile_logsumexp(logits.const_data_ptr(), tile_dtype(logits.scalar_type()), n, size, logits.stride(0),
                                 static_cast<float>(temperature), targets.const_data_ptr<int64_t>(), start,
                                 running_max.mutable_data_ptr<float>(), running_sum.mutable_data_ptr<float>(),
                                 picked.mutable_data_ptr<float>(), current_stream(logits)));
        continue;
      }
      if (rows) {  // the temperature is applied in the sweep
        const at::Tensor logits = tile_logits(hidden, weight.narrow(0, start, size), 1.0);
        if (keep_logits) ctx->saved_data["logits"] = logits;
        model::tile_logsumexp(logits.const_data_ptr<float>(), n, size, logits.stride(0),
                              static_cast<float>(temperature), targets.const_data_ptr<int64_t>(), start,
                              running_max.mutable_data_ptr<float>(), running_sum.mutable_data_ptr<float>(),
                              picked.mutable_data_ptr<float>());
        continue;
      }
      at::Tensor logits = tile_logits(hidden, weight.narrow(0, start, size), temperature);
      if (keep_logits) ctx->saved_data["logits"] = logits;
      at::Tensor new_max = at::maximum(running_max, logits.amax({1}));
      running_sum.mul_((running_max - new_max).exp_()).add_(logits.sub(new_max.unsqueeze(1)).exp_().sum({1}));
      running_max = new_max;
      auto [column, inside] = target_in_tile(targets, start, size, ct);
      picked.add_(logits.gather(1, column).squeeze(1).mul_(inside));
    }
    at::Tensor lse = running_max + running_sum.log();
    ctx->save_for_backward({hidden, weight, targets, lse});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["tile"] = tile;
    return picked - lse;  // float32 for half types: a sum of them over a response keeps its digits
  }

  // d out_i / d logits_iv = 1[v = t_i] − softmax_iv; logits = h W^T / T, so with
  // G = grad_out ⊙ (onehot − softmax) / T: d h = Σ_tiles G_tile W_tile and d W_tile = G_tile^T h.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& targets = saved[2];
    const at::Tensor& lse = saved[3];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t tile = ctx->saved_data["tile"].toInt();
    const int64_t vocab = weight.size(0);
    const at::ScalarType ct = compute_type(hidden.scalar_type());
    const at::Tensor g = grad_outputs[0].to(ct).contiguous();
    // A frozen projection (the reference's) or frozen hidden states need no product of their own.
    const bool want_hidden = ctx->needs_input_grad(0), want_weight = ctx->needs_input_grad(1);
    at::Tensor grad_hidden = want_hidden ? at::zeros(hidden.sizes(), hidden.options().dtype(ct)) : at::Tensor();
    at::Tensor grad_weight = want_weight ? at::empty(weight.sizes(), weight.options()) : at::Tensor();
    const bool rows = row_kernels(hidden), device = cuda_tiles(hidden);
    const at::Tensor h = device ? hidden : hidden.to(ct);
    c10::OptionalDeviceGuard on_device;
    if (device) on_device.reset_device(hidden.device());
    for (int64_t start = 0; start < vocab; start += tile) {
      const int64_t size = std::min(tile, vocab - start);
      const at::Tensor w = weight.narrow(0, start, size);
      // In place on the recomputed logits: softmax, then −g·softmax, then +g at the targets in this tile.
      // Logits kept by the forward pass (one tile) are used once, in place; a second backward through
      // the same graph (retain_graph) recomputes them.
      at::Tensor kept;
      if (ctx->saved_data.count("logits") > 0 && start == 0) {
        kept = ctx->saved_data["logits"].toTensor();
        ctx->saved_data.erase("logits");
      }
      at::Tensor grad_logits;
      if (device) {
        grad_logits = kept.defined() ? kept : at::mm(hidden, w.t());
        throw_unless_ok(cuda::tile_softmax_grad(
            grad_logits.mutable_data_ptr(), tile_dtype(grad_logits.scalar_type()), hidden.size(0), size,
            grad_logits.stride(0), static_cast<float>(temperature), targets.const_data_ptr<int64_t>(), start,
            lse.const_data_ptr<float>(), g.const_data_ptr<float>(), current_stream(grad_logits)));
        if (want_hidden) {  // float32 accumulation across tiles; each tile's product in the gradient's dtype
          if (grad_logits.scalar_type() == grad_hidden.scalar_type()) {
            grad_hidden.addmm_(grad_logits, w);
          } else {
            grad_hidden.add_(at::mm(grad_logits, w));
          }
        }
        if (want_weight) {
          at::Tensor rows_of_w = grad_weight.narrow(0, start, size);
          at::mm_out(rows_of_w, grad_logits.t(), hidden);
        }
        continue;
      }
      if (rows) {
        grad_logits = kept.defined() ? kept : tile_logits(hidden, w, 1.0);
        model::tile_softmax_grad(grad_logits.mutable_data_ptr<float>(), hidden.size(0), size, grad_logits.stride(0),
                                 static_cast<float>(temperature), targets.const_data_ptr<int64_t>(), start,
                                 lse.const_data_ptr<float>(), g.const_data_ptr<float>());
      } else {
        grad_logits = kept.defined() ? kept : tile_logits(hidden, w, temperature);
        grad_logits.sub_(lse.unsqueeze(1)).exp_().mul_(g.neg().unsqueeze(1));
        auto [column, inside] = target_in_tile(targets, start, size, ct);
        grad_logits.scatter_add_(1, column, (g * inside).unsqueeze(1));
        if (temperature != 1.0) grad_logits.div_(temperature);
      }
      if (want_hidden) add_hidden_grad(grad_hidden, grad_logits, w);
      if (want_weight) write_weight_grad(grad_weight.narrow(0, start, size), grad_logits, h);
    }
    return {want_hidden ? grad_hidden.to(hidden.scalar_type()) : at::Tensor(),
            grad_weight,
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

int64_t fused_logprobs_tile(int64_t rows, const c10::Device& device) {
  const int64_t column_bytes = std::max<int64_t>(rows, 1) * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, (device.is_cuda() ? kCudaTileBytes : kTileBytes) / column_bytes);
}

bool fused_logprobs_preferred(int64_t rows, int64_t vocab, const c10::Device& device) {
  if (!device.is_cpu()) return true;
  constexpr int64_t kKeptLogitsBytes = int64_t{128} << 20;
  return rows * vocab * static_cast<int64_t>(sizeof(float)) > kKeptLogitsBytes;
}

at::Tensor fused_token_logprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                double temperature, int64_t tile, bool keep_logits) {
  ALN_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
            "fused_token_logprobs: hidden [N, H] and weight [V, H] must share H");
  ALN_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0) && targets.scalar_type() == at::kLong,
            "fused_token_logprobs: targets must be int64 [N]");
  // The CPU row sweep reads the targets through a host pointer.
  ALN_CHECK(targets.device() == hidden.device(), "fused_token_logprobs: targets must be on the hidden states' device");
  ALN_CHECK(hidden.scalar_type() == weight.scalar_type() && hidden.device() == weight.device(),
            "fused_token_logprobs: hidden and weight must share dtype and device");
  ALN_CHECK(temperature > 0, "fused_token_logprobs: temperature must be positive");
  const int64_t columns = keep_logits ? std::max<int64_t>(weight.size(0), 1)
                          : tile > 0  ? tile
                                      : fused_logprobs_tile(hidden.size(0), hidden.device());
  // Without autograd there is no backward to keep the logits for (one tile still: where keeping is
  // chosen, one tile also measured a few percent faster than tiles for a frozen reference's pass).
  const bool keep = keep_logits && at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad());
  return FusedLogprobs::apply(hidden.contiguous(), weight.contiguous(), targets.contiguous(), temperature, columns,
                              keep);
}

}  // namespace aln::kernels
