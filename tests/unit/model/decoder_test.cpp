// Decoder models on their own: KV-cache decoding equals a full forward, padding on either side
// does not change real positions, score heads read the last real token, and bad configs or
// checkpoints give errors naming the key or tensor. (Parity with transformers: tests/parity.)
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "core/error.h"
#include "core/model/decoder.h"
#include "core/model/fast_linear.h"
#include "core/model/gemm_avx512.h"

namespace aln::model {
namespace {

ModelConfig tiny(Family family) {
  ModelConfig c;
  c.family = family;
  c.model_type = family == Family::kGpt2 ? "gpt2" : "llama";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = family == Family::kGpt2 ? 4 : 2;  // GQA on the Llama side
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.max_position = 64;
  c.tie_embeddings = family == Family::kGpt2;
  return c;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

class DecoderTest : public ::testing::TestWithParam<Family> {};

// Training through both families' linear layers (Llama's and GPT-2's Conv1D, which fast_linear's
// training layer reads through a transposed view): a float32 model's gradients against the same
// model in float64 (the BLAS's float64 products), within float32 rounding.
TEST_P(DecoderTest, TrainingGradientsMatchFloat64) {
  DecoderModel m32 = DecoderModel::random_init(tiny(GetParam()), 21);
  DecoderModel m64 = DecoderModel::random_init(tiny(GetParam()), 21);
  for (auto& [name, t] : m64.tensors()) t = t.to(at::kDouble);
  m64.set_compute_dtype(at::kDouble);
  for (DecoderModel* m : {&m32, &m64}) {
    for (auto& [name, t] : m->tensors()) t.requires_grad_(true);
  }
  at::manual_seed(22);
  const at::Tensor ids = at::randint(97, {4, 20}, at::kLong);  // 80 rows: the training layer's sizes
  const at::Tensor mask = at::ones({4, 20}, at::kLong);
  const at::Tensor weights = at::randn({4, 20, 97}, at::kDouble);
  for (DecoderModel* m : {&m32, &m64}) (m->logits(ids, mask).to(at::kDouble) * weights).sum().backward();
  for (const auto& [name, t] : m64.tensors()) {
    const at::Tensor want = t.grad();
    const at::Tensor got = m32.tensors().at(name).grad();
    ASSERT_TRUE(want.defined() && got.defined()) << name;
    const double scale = want.abs().max().item<double>() + 1e-12;
    EXPECT_LE((got.to(at::kDouble) - want).abs().max().item<double>(), 1e-4 * scale) << name;
  }
}

TEST_P(DecoderTest, KvCacheDecodingMatchesFullForward) {
  DecoderModel m = DecoderModel::random_init(tiny(GetParam()), 7);
  at::Tensor ids = at::randint(97, {2, 9}, at::kLong);
  at::Tensor mask = at::ones({2, 9}, at::kLong);
  at::Tensor full = m.logits(ids, mask);
  KvCache cache;
  at::Tensor first = m.logits(ids.narrow(1, 0, 5), mask.narrow(1, 0, 5), &cache);
  EXPECT_LT(max_diff(first, full.narrow(1, 0, 5)), 1e-5);
  for (int64_t t = 5; t < 9; ++t) {
    at::Tensor step = m.logits(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1), &cache);
    EXPECT_LT(max_diff(step.squeeze(1), full.select(1, t)), 1e-5) << "position " << t;
  }
  EXPECT_EQ(cache.length(), 9);
}

TEST_P(DecoderTest, PaddingOnEitherSideLeavesRealTokensUnchanged) {
  DecoderModel m = DecoderModel::random_init(tiny(GetParam()), 8);
  at::Tensor ids = at::randint(97, {1, 6}, at::kLong);
  at::Tensor alone = m.logits(ids, at::ones({1, 6}, at::kLong));
  at::Tensor pad = at::zeros({1, 3}, at::kLong);
  at::Tensor mask_left = at::cat({at::zeros({1, 3}, at::kLong), at::ones({1, 6}, at::kLong)}, 1);
  at::Tensor left = m.logits(at::cat({pad, ids}, 1), mask_left);
  at::Tensor right = m.logits(at::cat({ids, pad}, 1), mask_left.flip(1));
  EXPECT_LT(max_diff(left.narrow(1, 3, 6), alone), 1e-5);
  EXPECT_LT(max_diff(right.narrow(1, 0, 6), alone), 1e-5);
  EXPECT_TRUE(at::isfinite(left).all().item<bool>());  // padding rows never produce NaN
}

// A right-padded training batch takes the attention kernel's causal path (no mask): each row's
// real positions, and the gradients they produce, are the row's alone.
TEST_P(DecoderTest, RightPaddedBatchEqualsEachRowAloneWithGradients) {
  DecoderModel batch_model = DecoderModel::random_init(tiny(GetParam()), 12);
  DecoderModel alone_model = DecoderModel::random_init(tiny(GetParam()), 12);
  batch_model.set_requires_grad(true);
  alone_model.set_requires_grad(true);
  const std::vector<int64_t> lengths = {7, 4, 1};
  at::Tensor ids = at::randint(97, {3, 7}, at::kLong);
  at::Tensor mask = at::zeros({3, 7}, at::kLong);
  at::Tensor batch_loss = at::zeros({}, at::kFloat);
  for (size_t r = 0; r < lengths.size(); ++r) mask[static_cast<int64_t>(r)].narrow(0, 0, lengths[r]).fill_(1);
  at::Tensor batch_logits = batch_model.logits(ids, mask);
  for (size_t r = 0; r < lengths.size(); ++r) {
    const int64_t row = static_cast<int64_t>(r), n = lengths[r];
    at::Tensor alone = alone_model.logits(ids.narrow(0, row, 1).narrow(1, 0, n), at::ones({1, n}, at::kLong));
    EXPECT_LT(max_diff(batch_logits.narrow(0, row, 1).narrow(1, 0, n), alone), 1e-5) << "row " << r;
    alone.logsumexp(-1).sum().backward();
    batch_loss = batch_loss + batch_logits.narrow(0, row, 1).narrow(1, 0, n).logsumexp(-1).sum();
  }
  batch_loss.backward();
  for (const auto& [name, value] : batch_model.tensors()) {
    EXPECT_LT(max_diff(value.grad(), alone_model.tensors().at(name).grad()), 1e-4) << name;
  }
}

TEST_P(DecoderTest, ScoreHeadReadsLastRealToken) {
  ModelConfig c = tiny(GetParam());
  c.head = Head::kSequenceScore;
  DecoderModel m = DecoderModel::random_init(c, 9);
  at::Tensor ids = at::randint(97, {1, 5}, at::kLong);
  at::Tensor alone = m.scores(ids, at::ones({1, 5}, at::kLong));
  ASSERT_EQ(alone.sizes(), (at::IntArrayRef{1, 1}));
  at::Tensor batch_ids =
      at::cat({at::cat({at::zeros({1, 2}, at::kLong), ids}, 1), at::cat({ids, at::zeros({1, 2}, at::kLong)}, 1)});
  at::Tensor batch_mask = at::cat({at::cat({at::zeros({1, 2}, at::kLong), at::ones({1, 5}, at::kLong)}, 1),
                                   at::cat({at::ones({1, 5}, at::kLong), at::zeros({1, 2}, at::kLong)}, 1)});
  at::Tensor both = m.scores(batch_ids, batch_mask);
  EXPECT_LT(max_diff(both.select(0, 0), alone.select(0, 0)), 1e-5);
  EXPECT_LT(max_diff(both.select(0, 1), alone.select(0, 0)), 1e-5);
}

TEST_P(DecoderTest, GradientsReachEveryParameter) {
  DecoderModel m = DecoderModel::random_init(tiny(GetParam()), 10);
  m.set_requires_grad(true);
  at::Tensor ids = at::randint(97, {2, 4}, at::kLong);
  m.logits(ids, at::ones({2, 4}, at::kLong)).logsumexp(-1).sum().backward();
  for (const auto& [name, value] : m.tensors()) {
    ASSERT_TRUE(value.grad().defined()) << name;
    EXPECT_GT(value.grad().abs().sum().item<double>(), 0) << name;
  }
}

// Pipeline stages chained in one process through a link that passes tensors by hand: the same
// logits (padded batch) and the same gradients as the whole model, and each tensor owned by exactly
// the stages that need it.
class HandLink final : public PipelineLink {
 public:
  at::Tensor next_input;  // what the previous stage handed on (a leaf, like a received tensor)
  at::Tensor output;
  at::Tensor receive(const std::vector<int64_t>& shape, at::ScalarType dtype) override {
    EXPECT_EQ(next_input.sizes().vec(), shape);
    EXPECT_EQ(next_input.scalar_type(), dtype);
    return next_input;
  }
  [[noreturn]] void hand_on(const at::Tensor& out) override {
    output = out;
    throw ForwardHandedOn{};
  }
};

TEST_P(DecoderTest, StagesChainedEqualTheWholeModel) {
  ModelConfig c = tiny(GetParam());
  c.num_layers = 3;
  DecoderModel whole = DecoderModel::random_init(c, 11);
  const std::vector<int64_t> bounds = {0, 1, 3};
  std::vector<DecoderModel> stages;
  for (size_t s = 0; s + 1 < bounds.size(); ++s) stages.push_back(whole.to(at::kFloat).stage(bounds[s], bounds[s + 1]));
  // Ownership: every tensor on some stage; layers on exactly one; a tied embedding on first and last.
  for (const auto& [name, t] : whole.tensors()) {
    int owners = 0;
    for (const auto& st : stages) owners += st.tensors().count(name);
    const bool tied_embedding = c.tie_embeddings && (name == "transformer.wte.weight");
    EXPECT_EQ(owners, tied_embedding ? 2 : 1) << name;
  }
  EXPECT_TRUE(stages[0].is_first_stage() && !stages[0].is_last_stage());
  EXPECT_THROW(std::move(stages[0]).stage(0, 1), Error);                                             // already a stage
  EXPECT_THROW(stages[1].logits(at::zeros({1, 2}, at::kLong), at::ones({1, 2}, at::kLong)), Error);  // no link

  at::Tensor ids = at::randint(97, {2, 6}, at::kLong);
  at::Tensor mask = at::ones({2, 6}, at::kLong);
  mask.narrow(1, 0, 2).select(0, 1).zero_();  // left padding in row 1
  whole.set_requires_grad(true);
  at::Tensor want = whole.logits(ids, mask);
  want.pow(2).mean().backward();

  HandLink link;
  for (auto& st : stages) {
    st.set_requires_grad(true);
    st.set_pipeline_link(&link);
  }
  EXPECT_THROW(stages[0].logits(ids, mask), ForwardHandedOn);
  at::Tensor boundary = link.output.detach().requires_grad_(true);
  link.next_input = boundary;
  at::Tensor got = stages[1].logits(ids, mask);
  EXPECT_LT(max_diff(got, want), 1e-6);
  got.pow(2).mean().backward();
  link.output.backward(boundary.grad());
  for (const auto& [name, t] : whole.tensors()) {
    at::Tensor g;
    for (const auto& st : stages) {
      auto it = st.tensors().find(name);
      if (it == st.tensors().end()) continue;
      g = g.defined() ? g + it->second.grad() : it->second.grad();  // tied copies: the sum of both
    }
    EXPECT_LT(max_diff(g, t.grad()), 1e-6) << name;
  }
}

// Mixed precision (model.dtype: bfloat16): passes over float32 master weights compute in bfloat16
// and stay close to float32 (within bfloat16's 8-bit mantissa over two layers), gradients arrive in
// float32 on every parameter, and a frozen copy stored in bfloat16 computes exactly the same bits.
TEST_P(DecoderTest, BFloat16ComputeOverFloat32MasterWeights) {
  DecoderModel exact = DecoderModel::random_init(tiny(GetParam()), 13);
  DecoderModel mixed = exact.to(at::kFloat);
  mixed.set_compute_dtype(at::kBFloat16);
  mixed.set_requires_grad(true);
  exact.set_requires_grad(true);
  at::manual_seed(5);
  const at::Tensor ids = at::randint(97, {3, 6}, at::kLong);
  at::Tensor mask = at::ones({3, 6}, at::kLong);
  mask[2].narrow(0, 4, 2).zero_();  // right padding
  const at::Tensor h_exact = exact.hidden_states(ids, mask);
  const at::Tensor h_mixed = mixed.hidden_states(ids, mask);
  EXPECT_EQ(h_mixed.scalar_type(), at::kBFloat16);
  const double scale = h_exact.abs().max().item<double>();
  EXPECT_LT(max_diff(h_mixed.to(at::kFloat), h_exact) / scale, 0.05);
  // A linear read-out of the hidden states (a quadratic one would square bfloat16's error).
  const at::Tensor probe = at::randn(h_exact.sizes(), at::kFloat);
  (h_exact * probe).sum().backward();
  (h_mixed.to(at::kFloat) * probe).sum().backward();
  for (const auto& [name, value] : mixed.tensors()) {
    const at::Tensor g = exact.tensors().at(name).grad();
    if (!g.defined()) continue;  // not on the hidden states' path (an untied output projection)
    ASSERT_TRUE(value.grad().defined()) << name;
    EXPECT_EQ(value.grad().scalar_type(), at::kFloat) << name;
    EXPECT_LT(max_diff(value.grad(), g) / (g.abs().max().item<double>() + 1e-12), 0.1) << name;
  }
  at::NoGradGuard no_grad;
  DecoderModel frozen = mixed.to(at::kBFloat16);
  frozen.set_compute_dtype(at::ScalarType::Undefined);
  EXPECT_TRUE(at::equal(frozen.hidden_states(ids, mask), mixed.hidden_states(ids, mask)));
}

INSTANTIATE_TEST_SUITE_P(Families, DecoderTest, ::testing::Values(Family::kLlama, Family::kGpt2),
                         [](const auto& info) { return info.param == Family::kLlama ? "Llama" : "Gpt2"; });

// The engine's default reference is policy.to(kFloat): it must be a copy, or the optimizer's
// in-place updates of the policy would move the "frozen" reference with it.
TEST(Decoder, ToSameDtypeIsADeepCopy) {
  DecoderModel m = DecoderModel::random_init(tiny(Family::kLlama), 3);
  DecoderModel copy = m.to(at::kFloat);
  for (auto& [name, t] : m.tensors()) t.add_(1.0);
  for (const auto& [name, t] : copy.tensors()) {
    EXPECT_FALSE(at::equal(t, m.tensors().at(name))) << name << " shares storage with the original";
  }
}

TEST(Decoder, ParameterAndFlopCounts) {
  ModelConfig c = tiny(Family::kLlama);
  DecoderModel m = DecoderModel::random_init(c, 1);
  // embed 97*32 + per layer (norms 2*32, q 32*32, k,v 2*16*32, o 32*32, mlp 3*48*32) + norm 32 + lm_head 97*32
  const int64_t per_layer = 2 * 32 + 32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 48 * 32;
  EXPECT_EQ(m.num_parameters(), 97 * 32 + 2 * per_layer + 32 + 97 * 32);
  // 2 FLOPs per weight multiply (embedding lookups excluded) + attention 2 * 2 * L * T * H*d.
  EXPECT_DOUBLE_EQ(m.forward_flops_per_token(10), 2.0 * (m.num_parameters() - 97 * 32) + 4.0 * 2 * 10 * 32);
}

// parameter_count (torch-free, for the launcher's memory plan) equals the built model's count for
// every family, tying, biases, grouped-query attention and the score head.
TEST(ModelConfig, ParameterCountEqualsTheBuiltModel) {
  for (Family family : {Family::kLlama, Family::kGpt2}) {
    for (bool tied : {false, true}) {
      for (Head head : {Head::kCausalLm, Head::kSequenceScore}) {
        for (bool bias : {false, true}) {
          if (family == Family::kGpt2 && (bias || !tied)) continue;  // GPT-2 always has biases and ties
          ModelConfig c = tiny(family);
          c.tie_embeddings = tied;
          c.head = head;
          c.qkv_bias = bias;
          c.num_labels = 2;
          const DecoderModel m = DecoderModel::random_init(c, 1);
          EXPECT_EQ(parameter_count(c), m.num_parameters())
              << c.model_type << " tied " << tied << " score head " << (head == Head::kSequenceScore) << " bias " << bias;
        }
      }
    }
  }
}

TEST(Decoder, CheckpointErrorsNameTheTensor) {
  ModelConfig c = tiny(Family::kLlama);
  TensorMap tensors = DecoderModel::random_init(c, 1).tensors();
  TensorMap missing = tensors;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(DecoderModel::from_tensors(c, missing).status().message(),
            "1 tensor(s) missing from the checkpoint, first: 'model.layers.1.mlp.up_proj.weight'");
  TensorMap wrong = tensors;
  wrong["model.norm.weight"] = at::ones({31});
  EXPECT_EQ(
      DecoderModel::from_tensors(c, wrong).status().message(),
      "tensor 'model.norm.weight' has shape [31] but the config needs [32]; the config does not match the weights");
  TensorMap extra = tensors;
  extra["model.layers.2.mlp.up_proj.weight"] = at::ones({1});
  EXPECT_EQ(
      DecoderModel::from_tensors(c, extra).status().message(),
      "unexpected tensor(s) in the checkpoint: model.layers.2.mlp.up_proj.weight (wrong architecture in config.json?)");
  EXPECT_TRUE(DecoderModel::from_tensors(c, tensors).ok());
}

TEST(Decoder, Bfloat16TracksFloat32) {
  DecoderModel m = DecoderModel::random_init(tiny(Family::kLlama), 12);
  at::Tensor ids = at::randint(97, {2, 7}, at::kLong);
  at::Tensor mask = at::ones({2, 7}, at::kLong);
  at::Tensor f32 = m.logits(ids, mask);
  at::Tensor bf16 = m.to(at::kBFloat16).logits(ids, mask);
  EXPECT_EQ(bf16.scalar_type(), at::kBFloat16);
  // bf16 keeps 8 mantissa bits; through two layers the logits stay within a few percent of float32.
  EXPECT_LT(max_diff(bf16.to(at::kFloat), f32) / f32.abs().max().item<double>(), 0.05);
}

TEST(Decoder, ResizeVocabularyAddsMeanRowsAndKeepsOldLogits) {
  for (Family f : {Family::kLlama, Family::kGpt2}) {
    DecoderModel m = DecoderModel::random_init(tiny(f), 13);
    at::Tensor ids = at::randint(97, {1, 5}, at::kLong);
    at::Tensor before = m.logits(ids, at::ones({1, 5}, at::kLong));
    m.resize_vocabulary(100);
    EXPECT_EQ(m.config().vocab_size, 100);
    at::Tensor after = m.logits(ids, at::ones({1, 5}, at::kLong));
    ASSERT_EQ(after.size(-1), 100);
    EXPECT_LT(max_diff(after.narrow(-1, 0, 97), before), 1e-6);
    const std::string embed = f == Family::kGpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
    EXPECT_LT(max_diff(m.tensors().at(embed)[99], m.tensors().at(embed).narrow(0, 0, 97).mean(0)), 1e-7);
    EXPECT_THROW(m.resize_vocabulary(50), aln::Error);
    EXPECT_TRUE(DecoderModel::from_tensors(m.config(), m.tensors()).ok());
  }
}

TEST(ModelConfig, ParsesTransformersConfigsAndRejectsBadOnes) {
  auto c = parse_hf_config(R"({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16,
      "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, "tie_word_embeddings": true})",
                           "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_EQ(c->head_dim, 4);
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(parse_hf_config(R"({"model_type": "bert"})", "config.json").status().message(),
            "config.json: model_type: unknown architecture 'bert'; supported: llama, mistral, qwen2, gpt2");
  EXPECT_EQ(parse_hf_config(R"({"model_type": "llama", "vocab_size": "ten"})", "config.json").status().message(),
            "config.json: vocab_size: expected an integer, got \"ten\"");
  EXPECT_EQ(parse_hf_config(R"({"model_type": "llama", "vocab_size": 10})", "config.json").status().message(),
            "config.json: hidden_size: missing");
  EXPECT_EQ(parse_hf_config("{not json", "config.json").status().code(), absl::StatusCode::kInvalidArgument);
  auto gqa = parse_hf_config(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 12, "num_hidden_layers": 1,
      "num_attention_heads": 3, "num_key_value_heads": 2, "intermediate_size": 16})",
                             "config.json");
  EXPECT_EQ(gqa.status().message(), "config.json: num_key_value_heads: 2 does not divide num_attention_heads 3");
}

TEST(ModelConfig, RoundTripsThroughConfigJson) {
  for (Family f : {Family::kLlama, Family::kGpt2}) {
    ModelConfig c = tiny(f);
    auto back = parse_hf_config(to_hf_config_json(c), "config.json");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->hidden_size, c.hidden_size);
    EXPECT_EQ(back->num_kv_heads, c.num_kv_heads);
    EXPECT_EQ(back->tie_embeddings, c.tie_embeddings);
    EXPECT_EQ(back->family, f);
  }
}

}  // namespace
}  // namespace aln::model

namespace aln::model {
namespace {

// |got - exact| within the worst-case bound of a float32 dot product of length k (k u sum |x_j w_j|,
// plus the bias) around the float64 result, as at::linear itself is.
::testing::AssertionResult within_dot_bound(const at::Tensor& got, const at::Tensor& x, const at::Tensor& w,
                                            const at::Tensor& b) {
  const int64_t k = w.size(1);
  const at::Tensor b64 = b.defined() ? b.to(at::kDouble) : at::Tensor();
  const at::Tensor exact = at::linear(x.to(at::kDouble), w.to(at::kDouble), b64);
  at::Tensor bound = at::linear(x.abs().to(at::kDouble), w.abs().to(at::kDouble));
  if (b.defined()) bound = bound + b64.abs();
  bound = (k + 1) * 6e-8 * bound;
  if (got.sizes() != exact.sizes()) return ::testing::AssertionFailure() << "shape " << got.sizes();
  const at::Tensor err = (got.to(at::kDouble) - exact).abs();
  if ((err <= bound).all().item<bool>()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max error " << err.max().item<double>() << " over the bound";
}

// The decoding-step kernel against at::linear (the CPU reference): every row count it takes, K with
// and without a 16-wide tail, with bias, a leading batch shape; float32 rounding only.
TEST(FastLinear, DecodeKernelMatchesAtLinear) {
  at::manual_seed(3);
  for (int64_t k : {256, 100, 7}) {
    for (int64_t m = 1; m <= kDecodeLinearMaxRows; ++m) {
      const at::Tensor x = at::randn({m, 1, k});
      const at::Tensor w = at::randn({333, k});
      const at::Tensor b = at::randn({333});
      const at::Tensor want = at::linear(x, w, b);
      EXPECT_TRUE(within_dot_bound(fast_linear(x, w, b), x, w, b)) << "m " << m << " k " << k;
      EXPECT_TRUE(within_dot_bound(want, x, w, b));
    }
  }
}

// The GEMM kernel (more rows): row counts with every tail of its 12-row tile, column counts below,
// between and above its two 16-wide halves, K over several 256-deep passes and with tails, bias
// or not, a leading batch shape and a transposed (non-contiguous) input.
TEST(FastLinear, GemmKernelMatchesAtLinear) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU: fast_linear is at::linear";
  at::manual_seed(4);
  for (int64_t m : {17, 23, 24, 100, 211}) {
    for (int64_t n : {5, 16, 27, 32, 70, 333}) {
      for (int64_t k : {7, 64, 300, 600}) {
        const at::Tensor x = at::randn({m, k});
        const at::Tensor w = at::randn({n, k});
        const at::Tensor b = at::randn({n});
        ASSERT_TRUE(gemm_kernel_applies(x, w));
        EXPECT_TRUE(within_dot_bound(fast_linear(x, w, b), x, w, b)) << m << " x " << n << " x " << k;
        EXPECT_TRUE(within_dot_bound(fast_linear(x, w), x, w, {})) << m << " x " << n << " x " << k << " no bias";
      }
    }
  }
  const at::Tensor x = at::randn({3, 64, 40}).transpose(1, 2);  // [3, 40, 64], not contiguous
  const at::Tensor w = at::randn({50, 64});
  const at::Tensor got = fast_linear(x, w);
  ASSERT_EQ(got.sizes(), (at::IntArrayRef{3, 40, 50}));
  EXPECT_TRUE(within_dot_bound(got, x, w, {}));
}

// ALN_CPU_KERNELS=generic (model_test_generic runs this whole file so) selects the portable path:
// fast_linear is exactly at::linear, whatever the CPU.
TEST(FastLinear, GenericPathWhenAskedFor) {
  const char* choice = std::getenv("ALN_CPU_KERNELS");
  if (choice == nullptr || std::string(choice) != "generic") GTEST_SKIP() << "runs as model_test_generic";
  EXPECT_FALSE(gemm_avx512_available());
  at::NoGradGuard no_grad;
  at::manual_seed(6);
  for (int64_t m : {1, 5, 40}) {
    const at::Tensor x = at::randn({m, 96});
    const at::Tensor w = at::randn({70, 96});
    const at::Tensor b = at::randn({70});
    EXPECT_FALSE(decode_kernel_applies(x, w));
    EXPECT_FALSE(gemm_kernel_applies(x, w));
    EXPECT_TRUE(at::equal(fast_linear(x, w, b), at::linear(x, w, b))) << m;
  }
}

// Each output element is the same sequence of float32 operations whatever the thread count, so a
// forward pass gives the same bits on 1 and on 2 threads.
TEST(FastLinear, GemmKernelIsThreadCountIndependent) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU: fast_linear is at::linear";
  at::manual_seed(5);
  const at::Tensor x = at::randn({300, 600});
  const at::Tensor w = at::randn({1000, 600});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = fast_linear(x, w);
  at::set_num_threads(2);
  const at::Tensor two = fast_linear(x, w);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, two));
}

// Without autograd a weight stored [in, out] (GPT-2's Conv1D, seen through its transposed view):
// many rows go to the GEMM through the view, within the float32 bound and bit for bit what the
// same weight made contiguous gives; a decoding step's few rows to the BLAS (at::linear itself).
TEST(FastLinear, TransposedWeightWithoutAutograd) {
  at::NoGradGuard no_grad;
  at::manual_seed(12);
  const at::Tensor stored = at::randn({96, 70});  // [in, out]
  const at::Tensor w = stored.t(), b = at::randn({70});
  for (int64_t m : {1, 5, 16, 17, 40, 300}) {
    const at::Tensor x = at::randn({m, 96});
    const at::Tensor y = fast_linear(x, w, b);
    EXPECT_TRUE(within_dot_bound(y, x, w, b)) << m;
    EXPECT_FALSE(decode_kernel_applies(x, w));
    if (m <= 16 || !gemm_avx512_available()) {
      EXPECT_TRUE(at::equal(y, at::linear(x, w, b))) << m;
    } else {
      EXPECT_TRUE(gemm_kernel_applies(x, w));
      EXPECT_TRUE(at::equal(y, fast_linear(x, w.contiguous(), b))) << m;
    }
  }
}

// The same bound for a product a b of depth k: a b = linear(a, b^T).
::testing::AssertionResult within_product_bound(const at::Tensor& got, const at::Tensor& a, const at::Tensor& b) {
  return within_dot_bound(got, a, b.t(), at::Tensor());
}

MatrixView view_of(const at::Tensor& t) { return {t.const_data_ptr<float>(), t.stride(0), t.stride(1)}; }

// The GEMM through strides, as training's products use it: A with contiguous rows (x, dy; also rows
// wider apart than k), A transposed (dy^T: packed a tile at a time), A with neither stride 1, B
// either way round; c with a
// row stride wider than n; accumulation into c; depths across several 512-deep rounds with tails.
TEST(GemmAvx512, StridedOperandsAndAccumulation) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU";
  at::manual_seed(7);
  for (int64_t m : {1, 13, 97, 200}) {
    for (int64_t n : {3, 32, 45, 130}) {
      for (int64_t k : {1, 37, 513, 1100}) {
        const at::Tensor a_rows = at::randn({m, k});
        const at::Tensor a_cols = at::randn({k, m}).t();                  // a.row == 1
        const at::Tensor a_wide = at::randn({m, 2 * k}).narrow(1, 0, k);  // rows 2k apart
        const at::Tensor a_odd = at::randn({m, k, 2}).select(2, 0);       // strides (2k, 2)
        const at::Tensor b_rows = at::randn({k, n});
        const at::Tensor b_cols = at::randn({n, k}).t();
        for (const at::Tensor& a : {a_rows, a_cols, a_wide, a_odd}) {
          for (const at::Tensor& b : {b_rows, b_cols}) {
            at::Tensor c = at::full({m, n + 5}, 7.0f);
            gemm_avx512(view_of(a), view_of(b), m, k, n, c.mutable_data_ptr<float>(), n + 5);
            EXPECT_TRUE(within_product_bound(c.narrow(1, 0, n), a, b)) << m << " x " << k << " x " << n;
            EXPECT_TRUE(at::equal(c.narrow(1, n, 5), at::full({m, 5}, 7.0f))) << "wrote past n";
          }
        }
        // c += a b: the sum of two products, each within its bound, is within the sum of the bounds.
        at::Tensor c = at::empty({m, n});
        gemm_avx512(view_of(a_rows), view_of(b_rows), m, k, n, c.mutable_data_ptr<float>(), n);
        gemm_avx512(view_of(a_cols), view_of(b_cols), m, k, n, c.mutable_data_ptr<float>(), n, nullptr, true);
        const at::Tensor exact = at::mm(a_rows.to(at::kDouble), b_rows.to(at::kDouble)) +
                                 at::mm(a_cols.to(at::kDouble), b_cols.to(at::kDouble));
        const at::Tensor bound = (k + 2) * 6e-8 *
                                 (at::mm(a_rows.abs().to(at::kDouble), b_rows.abs().to(at::kDouble)) +
                                  at::mm(a_cols.abs().to(at::kDouble), b_cols.abs().to(at::kDouble)));
        EXPECT_TRUE(((c.to(at::kDouble) - exact).abs() <= bound).all().item<bool>()) << m << " " << k << " " << n;
      }
    }
  }
}

// B wider than one packed block (4,096 columns) and deeper than one round (512): packed a block's
// round at a time, within the float32 bound, the same bits on 1 and 2 threads and with a packing
// buffer the caller hands in (of gemm_packed_floats' size, full of garbage).
TEST(GemmAvx512, PackedABlockAndARoundAtATime) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU";
  at::manual_seed(9);
  const int64_t m = 13, k = 1100, n = 2 * 4096 + 45;
  const at::Tensor a = at::randn({m, k});
  for (const at::Tensor& b : {at::randn({k, n}), at::randn({n, k}).t()}) {
    at::Tensor c = at::empty({m, n});
    gemm_avx512(view_of(a), view_of(b), m, k, n, c.mutable_data_ptr<float>(), n);
    EXPECT_TRUE(within_product_bound(c, a, b));
    const int threads = at::get_num_threads();
    at::set_num_threads(1);
    at::Tensor one = at::empty({m, n});
    gemm_avx512(view_of(a), view_of(b), m, k, n, one.mutable_data_ptr<float>(), n);
    at::set_num_threads(threads);
    EXPECT_TRUE(at::equal(one, c));
    EXPECT_EQ(gemm_packed_floats(n, k), 4096 * 512);
    auto scratch = allocate_floats(static_cast<size_t>(gemm_packed_floats(n, k)));
    std::fill(scratch.get(), scratch.get() + gemm_packed_floats(n, k), std::nanf(""));
    at::Tensor given = at::empty({m, n});
    gemm_avx512(view_of(a), view_of(b), m, k, n, given.mutable_data_ptr<float>(), n, nullptr, false, scratch.get());
    EXPECT_TRUE(at::equal(given, c));
    // A bias (added in each element's first pass) and accumulation into c, across the blocks too.
    const at::Tensor bias = at::randn({n});
    at::Tensor with_bias = at::empty({m, n});
    gemm_avx512(view_of(a), view_of(b), m, k, n, with_bias.mutable_data_ptr<float>(), n, bias.const_data_ptr<float>());
    EXPECT_TRUE(within_dot_bound(with_bias, a, b.t(), bias));
    at::Tensor twice = c.clone();
    gemm_avx512(view_of(a), view_of(b), m, k, n, twice.mutable_data_ptr<float>(), n, nullptr, true);
    const at::Tensor bound = (k + 2) * 6e-8 * 2 * at::mm(a.abs().to(at::kDouble), b.abs().to(at::kDouble));
    EXPECT_TRUE(
        ((twice.to(at::kDouble) - 2 * at::mm(a.to(at::kDouble), b.to(at::kDouble))).abs() <= bound).all().item<bool>());
  }
}

// Training's linear layer: values and all three gradients against float64 autograd through
// at::linear, within float32 dot-product bounds (dx sums over n, dW over the m rows); a weight seen
// through a transposed view, a leading batch shape, a bias or none, a frozen weight, and few rows
// (at::linear's own autograd). The kernels for passes without autograd never take these operands.
TEST(FastLinear, TrainingGradientsMatchAtLinear) {
  at::manual_seed(8);
  struct Case {
    int64_t m, k, n;
    bool transposed_weight, bias, frozen_weight;
  };
  for (const Case& c :
       {Case{40, 8, 5, false, false, false}, Case{2, 8, 5, false, true, false}, Case{300, 64, 176, false, true, false},
        Case{256, 176, 64, true, false, false}, Case{1030, 96, 130, false, false, true},
        Case{600, 520, 33, true, true, false}, Case{1024, 300, 520, true, true, false}}) {
    const at::Tensor x = at::randn({2, c.m / 2, c.k}).requires_grad_(true);
    at::Tensor w0 = c.transposed_weight ? at::randn({c.k, c.n}) : at::randn({c.n, c.k});
    w0.requires_grad_(!c.frozen_weight);
    const at::Tensor w = c.transposed_weight ? w0.t() : w0;
    const at::Tensor b = c.bias ? at::randn({c.n}).requires_grad_(true) : at::Tensor();
    const at::Tensor gy = at::randn({2, c.m / 2, c.n});
    EXPECT_FALSE(decode_kernel_applies(x, w));
    EXPECT_FALSE(gemm_kernel_applies(x, w));
    const at::Tensor y = fast_linear(x, w, b);
    EXPECT_TRUE(within_dot_bound(y.detach(), x.detach(), w.detach(), c.bias ? b.detach() : at::Tensor()))
        << c.m << " x " << c.k << " x " << c.n;
    y.backward(gy);
    const at::Tensor gy2 = gy.reshape({-1, c.n}), x2 = x.detach().reshape({-1, c.k});
    EXPECT_TRUE(within_product_bound(x.grad().reshape({-1, c.k}), gy2, w.detach())) << "dx " << c.m;
    if (c.frozen_weight) {
      EXPECT_FALSE(w0.grad().defined());
    } else {
      const at::Tensor dw = c.transposed_weight ? w0.grad().t() : w0.grad();
      EXPECT_TRUE(within_product_bound(dw, gy2.t(), x2)) << "dW " << c.m;
    }
    if (c.bias) {
      EXPECT_TRUE(at::allclose(b.grad(), gy2.sum(0), 1e-5, 1e-4));
    }
  }
}

// The last case above, and the one below, take all three products through the GEMM.
TEST(FastLinear, GemmTakesTheProductsItWins) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU";
  for (const auto& [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{1024, 300, 520}, {1024, 512, 512}}) {
    EXPECT_TRUE(gemm_wins(LinearProduct::kForward, m, k, n));
    EXPECT_TRUE(gemm_wins(LinearProduct::kGradInput, m, k, n));
    EXPECT_TRUE(gemm_wins(LinearProduct::kGradWeight, m, k, n));
  }
  EXPECT_FALSE(gemm_wins(LinearProduct::kForward, 16, 512, 512));     // the decoding-step sizes
  EXPECT_FALSE(gemm_wins(LinearProduct::kGradWeight, 2048, 64, 64));  // one output tile: the BLAS
}

// A training step's gradients are the same bits on 1 and on 2 threads (the data-parallel and resume
// tests compare runs bit for bit).
TEST(FastLinear, TrainingGradientsAreThreadCountIndependent) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU: the BLAS computes these";
  at::manual_seed(9);
  const at::Tensor x0 = at::randn({1024, 512});
  const at::Tensor w0 = at::randn({512, 512});
  const at::Tensor gy = at::randn({1024, 512});
  auto grads = [&](int threads) {
    at::set_num_threads(threads);
    const at::Tensor x = x0.clone().requires_grad_(true);
    const at::Tensor w = w0.clone().requires_grad_(true);
    const at::Tensor y = fast_linear(x, w);
    y.backward(gy);
    return std::vector<at::Tensor>{y.detach(), x.grad(), w.grad()};
  };
  const int threads = at::get_num_threads();
  const auto one = grads(1), two = grads(2);
  at::set_num_threads(threads);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(at::equal(one[i], two[i])) << i;
}

}  // namespace
}  // namespace aln::model

namespace aln::model {
namespace {

// A freed buffer is kept and handed out again (same memory) for a request of up to its size and at
// least half of it; small requests bypass the pool; beyond the byte limit buffers go back to the
// system; a tensor may outlive its pool.
TEST(ScratchPool, ReusesFreedBuffersWithinItsLimit) {
  ScratchPool pool(size_t{5} << 20);
  const void* first = nullptr;
  {
    at::Tensor a = pool.empty(1024, 1024);  // 4 MiB
    first = a.data_ptr();
    EXPECT_EQ(pool.kept_bytes(), 0u);
  }
  EXPECT_EQ(pool.kept_bytes(), size_t{4} << 20);
  {
    at::Tensor under_half = pool.empty(448, 1024);  // 1.75 MiB: the 4 MiB buffer would be wasted on it
    EXPECT_NE(under_half.data_ptr(), first);
    EXPECT_EQ(pool.kept_bytes(), size_t{4} << 20);
  }
  // (1.75 MiB more would pass the 5 MiB limit: that buffer went back to the system.)
  EXPECT_EQ(pool.kept_bytes(), size_t{4} << 20);
  {
    at::Tensor b = pool.empty(1000, 1024);  // fits the kept buffer
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_EQ(pool.kept_bytes(), 0u);
    at::Tensor c = pool.empty(600, 1024);  // the kept one is taken: a new buffer
    EXPECT_NE(c.data_ptr(), first);
    at::Tensor small = pool.empty(16, 16);
    EXPECT_EQ(small.sizes(), (at::IntArrayRef{16, 16}));
  }
  // (Freed in reverse order:) c's 2.3 MiB was kept; b's 4 MiB would pass the 5 MiB limit: freed.
  EXPECT_EQ(pool.kept_bytes(), size_t{600} * 1024 * 4);
  at::Tensor kept_alive;
  {
    ScratchPool short_lived;
    kept_alive = short_lived.empty(512, 1024);
  }
  kept_alive.fill_(1.0f);  // its pool is gone; the memory is still the tensor's
  EXPECT_EQ(kept_alive.sum().item<float>(), 512.0f * 1024.0f);
}

// Passes without autograd reuse the model's buffers: the logits of a second pass land in the memory
// the first pass's logits had.
TEST(ScratchPool, SecondPassReusesTheLogitsBuffer) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "no AVX-512: the model's linear layers are at::linear";
  ModelConfig c = tiny(Family::kLlama);
  c.vocab_size = 4096;  // 2 x 64 x 4096 floats of logits: 2 MiB, from the pool
  const DecoderModel model = DecoderModel::random_init(c, 1);
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::randint(4096, {2, 64}, at::kLong);
  const at::Tensor mask = at::ones({2, 64}, at::kLong);
  const void* first = nullptr;
  at::Tensor want;
  {
    at::Tensor logits = model.logits(ids, mask);
    first = logits.data_ptr();
    want = logits.clone();
  }
  const at::Tensor again = model.logits(ids, mask);
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_TRUE(at::equal(again, want));
}

}  // namespace
}  // namespace aln::model

namespace aln::model {
namespace {

// Without autograd the decoder updates its residual stream and gate in place; with autograd on (and
// nothing requiring gradients, so the same kernels run) it does not. Same bits either way, for a
// whole model and for a later pipeline stage, whose received input must stay untouched.
class ReceiveOnce final : public PipelineLink {
 public:
  explicit ReceiveOnce(at::Tensor input) : input_(std::move(input)) {}
  at::Tensor receive(const std::vector<int64_t>&, at::ScalarType) override { return input_; }
  [[noreturn]] void hand_on(const at::Tensor&) override { throw ForwardHandedOn{}; }

 private:
  at::Tensor input_;
};

TEST(DecoderInPlace, NoGradPassEqualsGradModePass) {
  ModelConfig c = tiny(Family::kLlama);
  c.vocab_size = 512;
  const DecoderModel model = DecoderModel::random_init(c, 2);
  const at::Tensor ids = at::randint(512, {3, 40}, at::kLong);
  const at::Tensor mask = at::ones({3, 40}, at::kLong);
  at::Tensor grad_mode = model.logits(ids, mask);  // no parameter requires grad: same kernels
  EXPECT_FALSE(grad_mode.requires_grad());
  at::Tensor no_grad;
  {
    at::NoGradGuard guard;
    no_grad = model.logits(ids, mask);
  }
  EXPECT_TRUE(at::equal(grad_mode, no_grad));

  DecoderModel last = DecoderModel(model).stage(1, c.num_layers);
  const at::Tensor received = at::randn({3, 40, c.hidden_size});
  const at::Tensor copy = received.clone();
  ReceiveOnce link(received);
  last.set_pipeline_link(&link);
  at::Tensor stage_grad_mode = last.logits(ids, mask);
  at::Tensor stage_no_grad;
  {
    at::NoGradGuard guard;
    stage_no_grad = last.logits(ids, mask);
  }
  EXPECT_TRUE(at::equal(stage_grad_mode, stage_no_grad));
  EXPECT_TRUE(at::equal(received, copy));
}

}  // namespace
}  // namespace aln::model
