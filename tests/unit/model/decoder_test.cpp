// Decoder models on their own: KV-cache decoding equals a full forward, padding on either side
// does not change real positions, score heads read the last real token, and bad configs or
// checkpoints give errors naming the key or tensor. (Parity with transformers: tests/parity.)
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/model/decode_linear.h"
#include "core/model/decoder.h"

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

// The decoding-step kernel against at::linear (the CPU reference): every row count it takes, K with
// and without a 16-wide tail, with bias, a leading batch shape; float32 rounding only. Outside its
// scope (more rows, autograd) it is at::linear itself.
TEST(DecodeLinear, MatchesAtLinear) {
  at::manual_seed(3);
  for (int64_t k : {256, 100, 7}) {
    for (int64_t m = 1; m <= kDecodeLinearMaxRows; ++m) {
      const at::Tensor x = at::randn({m, 1, k});
      const at::Tensor w = at::randn({333, k});
      const at::Tensor b = at::randn({333});
      const at::Tensor want = at::linear(x, w, b);
      const at::Tensor got = decode_linear(x, w, b);
      ASSERT_EQ(got.sizes(), want.sizes());
      // Within the worst-case bound of a float32 dot product of length k (k u sum |x_j w_j|) of
      // the float64 result, as at::linear is.
      const at::Tensor exact = at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble));
      const at::Tensor bound = (k + 1) * 6e-8 * (at::linear(x.abs().to(at::kDouble), w.abs().to(at::kDouble)) +
                                                 b.abs().to(at::kDouble));
      EXPECT_TRUE(((got.to(at::kDouble) - exact).abs() <= bound).all().item<bool>())
          << "m " << m << " k " << k << " max diff " << (got - want).abs().max().item<float>();
      EXPECT_TRUE(((want.to(at::kDouble) - exact).abs() <= bound).all().item<bool>());
    }
  }
  const at::Tensor many = at::randn({kDecodeLinearMaxRows + 1, 64});
  const at::Tensor w = at::randn({40, 64});
  EXPECT_FALSE(decode_linear_applies(many, w));
  EXPECT_TRUE(at::equal(decode_linear(many, w), at::linear(many, w)));
}

TEST(DecodeLinear, LeavesAutogradToAtLinear) {
  const at::Tensor x = at::randn({2, 8});
  const at::Tensor w = at::randn({5, 8}).requires_grad_(true);
  EXPECT_FALSE(decode_linear_applies(x, w));
  decode_linear(x, w).sum().backward();
  EXPECT_TRUE(w.grad().defined());
}

}  // namespace
}  // namespace aln::model
