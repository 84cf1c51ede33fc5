// Which attention kernel a training batch reaches on a GPU (issue #21's "a test that checks which
// backend ran"). A collated, right-padded batch takes SDPA's own causal path (no mask), which is
// what lets the flash kernel run: with every other backend switched off, the forward and backward
// must still run (SDPA throws "no available kernel" otherwise) and give the numbers of the default
// choice; the explicit-mask path (a left-padded batch) cannot use flash, which the same switch
// shows by throwing. Qwen2.5-shaped heads (head_dim 64, two query heads per key/value head: the
// kernel's grouped-query path), bfloat16. Skipped without a GPU.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include "core/model/decoder.h"
#include "core/model/device.h"

namespace aln::model {
namespace {

// Only the flash backend allowed while alive; the user's choices come back after.
class OnlyFlashAttention {
 public:
  OnlyFlashAttention()
      : flash_(ctx().userEnabledFlashSDP()),
        efficient_(ctx().userEnabledMemEfficientSDP()),
        math_(ctx().userEnabledMathSDP()),
        cudnn_(ctx().userEnabledCuDNNSDP()) {
    ctx().setSDPUseFlash(true);
    ctx().setSDPUseMemEfficient(false);
    ctx().setSDPUseMath(false);
    ctx().setSDPUseCuDNN(false);
  }
  ~OnlyFlashAttention() {
    ctx().setSDPUseFlash(flash_);
    ctx().setSDPUseMemEfficient(efficient_);
    ctx().setSDPUseMath(math_);
    ctx().setSDPUseCuDNN(cudnn_);
  }
  OnlyFlashAttention(const OnlyFlashAttention&) = delete;
  OnlyFlashAttention& operator=(const OnlyFlashAttention&) = delete;

 private:
  static at::Context& ctx() { return at::globalContext(); }
  bool flash_, efficient_, math_, cudnn_;
};

DecoderModel qwen_shaped_heads() {
  ModelConfig c;
  c.vocab_size = 96;
  c.hidden_size = 256;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.intermediate_size = 512;
  c.max_position = 128;
  return DecoderModel::random_init(c, 11);
}

// The hidden states' sum and the gradient it gives the first layer's query projection.
std::pair<at::Tensor, at::Tensor> pass(const DecoderModel& m, const at::Tensor& ids, const at::Tensor& mask,
                                       bool right_padded) {
  at::Tensor q = m.tensors().at("model.layers.0.self_attn.q_proj.weight");
  q.mutable_grad() = at::Tensor();
  at::Tensor h = m.hidden_states(ids, mask, nullptr, right_padded);
  at::Tensor kept = (h.to(at::kFloat) * mask.unsqueeze(-1).to(at::kFloat)).sum();
  kept.backward();
  return {h.detach().to(at::kFloat).cpu(), q.grad().to(at::kFloat).cpu()};
}

TEST(AttentionOnGpu, RightPaddedBf16BatchRunsOnTheFlashKernel) {
  absl::StatusOr<c10::Device> device = cuda_device_for(0);
  if (!device.ok()) GTEST_SKIP() << device.status().message();
  DecoderModel m = qwen_shaped_heads().to(*device, at::kBFloat16);
  m.set_requires_grad(true);
  at::manual_seed(5);
  const at::Tensor ids = at::randint(1, 96, {3, 40}, at::kLong).to(*device);
  at::Tensor mask = at::ones({3, 40}, at::kLong);
  mask[1].narrow(0, 30, 10).fill_(0);  // right padding, as collated training batches have
  mask[2].narrow(0, 12, 28).fill_(0);
  mask = mask.to(*device);
  const auto [expected_h, expected_grad] = pass(m, ids, mask, /*right_padded=*/true);
  {
    OnlyFlashAttention only_flash;
    const auto [h, grad] = pass(m, ids, mask, /*right_padded=*/true);
    // The same kernel or another one: bfloat16 outputs within its rounding.
    EXPECT_TRUE(at::allclose(h, expected_h, 2e-2, 2e-2)) << (h - expected_h).abs().max().item<float>();
    EXPECT_TRUE(at::allclose(grad, expected_grad, 5e-2, 5e-2)) << (grad - expected_grad).abs().max().item<float>();
    // A mask in the call (what left padding needs) is beyond the flash kernel.
    EXPECT_THROW(pass(m, ids, mask, /*right_padded=*/false), c10::Error);
  }
}

}  // namespace
}  // namespace aln::model
