// Generation: the KV-cache loop equals naive recomputation, batches equal single rows, sampling
// is reproducible under a seed, filters keep exactly the intended tokens, and stops end rows.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "core/error.h"
#include "core/model/cuda_graph.h"
#include "core/model/device.h"
#include "core/model/generation.h"

namespace aln::model {
namespace {

DecoderModel tiny_llama(uint64_t seed) {
  ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 40;
  c.max_position = 128;
  return DecoderModel::random_init(c, seed);
}

TEST(Generation, GreedyWithCacheEqualsNaiveRecomputation) {
  DecoderModel m = tiny_llama(3);
  at::Tensor prompt = at::randint(50, {1, 4}, at::kLong);
  GenerationOptions options;
  options.max_new_tokens = 12;
  GenerationOutput out = generate(m, prompt, at::ones_like(prompt), options);
  at::Tensor seq = prompt;
  for (int64_t t = 0; t < 12; ++t) {
    at::Tensor logits = m.logits(seq, at::ones_like(seq)).select(1, seq.size(1) - 1);
    at::Tensor next = logits.argmax(-1, true);
    EXPECT_EQ(next.item<int64_t>(), out.tokens[0][t].item<int64_t>()) << "step " << t;
    EXPECT_NEAR(logits.log_softmax(-1)[0][next.item<int64_t>()].item<float>(), out.logprobs[0][t].item<float>(), 1e-5);
    seq = at::cat({seq, next}, 1);
  }
  EXPECT_EQ(out.lengths[0].item<int64_t>(), 12);
}

TEST(Generation, LeftPaddedBatchEqualsSingleRows) {
  DecoderModel m = tiny_llama(4);
  at::Tensor a = at::randint(50, {1, 5}, at::kLong), b = at::randint(50, {1, 3}, at::kLong);
  GenerationOptions options;
  options.max_new_tokens = 8;
  at::Tensor ids = at::cat({a, at::cat({at::zeros({1, 2}, at::kLong), b}, 1)});
  at::Tensor mask = at::cat({at::ones({1, 5}, at::kLong), at::cat({at::zeros({1, 2}, at::kLong), at::ones({1, 3}, at::kLong)}, 1)});
  GenerationOutput both = generate(m, ids, mask, options);
  EXPECT_TRUE(at::equal(both.tokens[0], generate(m, a, at::ones_like(a), options).tokens[0]));
  EXPECT_TRUE(at::equal(both.tokens[1], generate(m, b, at::ones_like(b), options).tokens[0]));
}

TEST(Generation, SamplingIsReproducibleUnderASeed) {
  DecoderModel m = tiny_llama(5);
  at::Tensor prompt = at::randint(50, {3, 4}, at::kLong);
  GenerationOptions options;
  options.decoding = Decoding::kSample;
  options.temperature = 1.5;
  options.max_new_tokens = 16;
  options.seed = 11;
  GenerationOutput x = generate(m, prompt, at::ones_like(prompt), options);
  GenerationOutput y = generate(m, prompt, at::ones_like(prompt), options);
  EXPECT_TRUE(at::equal(x.tokens, y.tokens));
  options.seed = 12;
  EXPECT_FALSE(at::equal(x.tokens, generate(m, prompt, at::ones_like(prompt), options).tokens));
  options.top_k = 1;  // top-1 sampling is greedy
  GenerationOptions greedy;
  greedy.max_new_tokens = 16;
  EXPECT_TRUE(at::equal(generate(m, prompt, at::ones_like(prompt), options).tokens,
                        generate(m, prompt, at::ones_like(prompt), greedy).tokens));
}

// Ranks that must decode in step (a fully sharded policy): a call whose rows ended keeps decoding
// while another rank's have not, and still returns exactly what it returns alone.
TEST(Generation, DecodingOnForOtherRanksReturnsTheSameOutput) {
  DecoderModel m = tiny_llama(5);
  at::Tensor prompt = at::randint(50, {3, 4}, at::kLong);
  GenerationOptions options;
  options.decoding = Decoding::kSample;
  options.max_new_tokens = 24;
  options.seed = 11;
  options.pad_token_id = 0;
  // Rows end at their first token below 20 (so at different steps, well before 24).
  options.stop_condition = [](int64_t, const std::vector<int64_t>& g) { return g.back() < 20; };
  const GenerationOutput alone = generate(m, prompt, at::ones_like(prompt), options);
  const int64_t own = alone.tokens.size(1);
  ASSERT_LT(own, 20) << "the rows should end early for this test to mean something";
  for (int64_t others : {own + 3, int64_t{24}}) {
    int64_t calls = 0;
    GenerationOptions synced = options;
    // Another rank's rows end after `others` steps: every rank has ended only then.
    synced.all_ended = [&calls, others](bool) { return ++calls >= others; };
    const GenerationOutput got = generate(m, prompt, at::ones_like(prompt), synced);
    EXPECT_EQ(calls, std::min<int64_t>(others, 23)) << "one call per token but the last";
    EXPECT_TRUE(at::equal(got.tokens, alone.tokens));
    EXPECT_TRUE(at::equal(got.logprobs, alone.logprobs));
    EXPECT_TRUE(at::equal(got.lengths, alone.lengths));
  }
  // Every rank ended when this one did: the same number of steps as alone.
  int64_t calls = 0;
  GenerationOptions synced = options;
  synced.all_ended = [&calls](bool ended_here) {
    ++calls;
    return ended_here;
  };
  EXPECT_TRUE(at::equal(generate(m, prompt, at::ones_like(prompt), synced).tokens, alone.tokens));
  EXPECT_EQ(calls, own);
}

// Stop tokens are matched on the device and the rows' ends read back only every check_every steps
// (a GPU's host would otherwise wait for the device at every token): the output is the host
// check's, token for token, whatever the interval, and other ranks are asked only at the checks.
TEST(Generation, EndsCheckedEveryFewStepsGiveTheSameOutput) {
  DecoderModel m = tiny_llama(5);
  at::Tensor prompt = at::randint(50, {3, 4}, at::kLong);
  GenerationOptions on_host;
  on_host.decoding = Decoding::kSample;
  on_host.max_new_tokens = 24;
  on_host.seed = 11;
  on_host.stop_condition = [](int64_t, const std::vector<int64_t>& g) { return g.back() < 20; };
  const GenerationOutput want = generate(m, prompt, at::ones_like(prompt), on_host);
  ASSERT_LT(want.tokens.size(1), 20) << "the rows should end early for this test to mean something";
  GenerationOptions on_device = on_host;
  on_device.stop_condition = nullptr;
  for (int64_t t = 0; t < 20; ++t) on_device.stop_tokens.push_back(t);  // the same ends, as stop tokens
  for (int64_t every : {0, 1, 3, 8, 100}) {
    GenerationOptions o = on_device;
    o.check_every = every;
    int64_t calls = 0;
    o.all_ended = [&calls](bool ended_here) {
      ++calls;
      return ended_here;
    };
    const GenerationOutput got = generate(m, prompt, at::ones_like(prompt), o);
    EXPECT_TRUE(at::equal(got.tokens, want.tokens)) << "check_every " << every;
    EXPECT_TRUE(at::equal(got.logprobs, want.logprobs)) << "check_every " << every;
    EXPECT_TRUE(at::equal(got.lengths, want.lengths)) << "check_every " << every;
    const int64_t step = every == 0 ? 1 : every;  // 0: every step on the CPU
    const int64_t own = want.tokens.size(1);
    EXPECT_EQ(calls, std::min<int64_t>((own + step - 1) / step, 23 / step)) << "check_every " << every;
  }
}

// On a GPU (skipped where there is none; scripts/device_check.sh runs it there): greedy float32
// decoding of a left-padded batch with stop tokens gives the CPU's tokens, with the ends checked
// every 8 steps as a GPU does by default; sampling repeats under a seed with the device's generator.
TEST(GenerationOnGpu, GreedyEqualsTheCpuAndSamplingRepeats) {
  absl::StatusOr<c10::Device> device = cuda_device_for(0);
  if (!device.ok()) GTEST_SKIP() << device.status().message();
  DecoderModel m = tiny_llama(7);
  const DecoderModel on_gpu = m.to(*device, at::kFloat);
  at::manual_seed(7);
  at::Tensor ids = at::randint(1, 50, {3, 6}, at::kLong);
  at::Tensor mask = at::ones({3, 6}, at::kLong);
  mask[1].narrow(0, 0, 2).fill_(0);  // left padding on two rows
  mask[2].narrow(0, 0, 4).fill_(0);
  GenerationOptions options;
  options.max_new_tokens = 24;
  for (int64_t t = 0; t < 8; ++t) options.stop_tokens.push_back(t);  // rows end at different steps
  const GenerationOutput cpu = generate(m, ids, mask, options);
  ASSERT_LT(cpu.tokens.size(1), 24) << "the rows should end early, so that the checks every 8 steps matter";
  const GenerationOutput gpu = generate(on_gpu, ids, mask, options);
  ASSERT_EQ(gpu.tokens.device(), *device);
  EXPECT_TRUE(at::equal(gpu.tokens.cpu(), cpu.tokens));
  EXPECT_TRUE(at::equal(gpu.lengths.cpu(), cpu.lengths));
  EXPECT_TRUE(at::allclose(gpu.logprobs.cpu(), cpu.logprobs, 1e-4, 1e-5));
  options.decoding = Decoding::kSample;
  options.seed = 3;
  EXPECT_TRUE(at::equal(generate(on_gpu, ids, mask, options).tokens, generate(on_gpu, ids, mask, options).tokens));
}

at::Tensor keep(std::vector<int64_t> flags) { return at::tensor(flags, at::kLong).to(at::kBool).unsqueeze(0); }

TEST(Generation, FiltersKeepTheIntendedTokens) {
  at::Tensor logits = at::log(at::tensor({0.5, 0.3, 0.15, 0.05}, at::kDouble)).unsqueeze(0);
  at::Tensor k2 = filter_logits(logits, 2, 1.0);
  EXPECT_TRUE(at::equal(at::isfinite(k2), keep({1, 1, 0, 0})));
  at::Tensor p = filter_logits(logits, 0, 0.75);  // 0.5 + 0.3 reaches 0.75: two tokens
  EXPECT_TRUE(at::equal(at::isfinite(p), keep({1, 1, 0, 0})));
  at::Tensor p2 = filter_logits(logits, 0, 0.85);  // needs the third token too
  EXPECT_TRUE(at::equal(at::isfinite(p2), keep({1, 1, 1, 0})));
}

TEST(Generation, StopTokensAndConditionsEndRows) {
  DecoderModel m = tiny_llama(6);
  at::Tensor prompt = at::randint(50, {2, 4}, at::kLong);
  GenerationOptions options;
  options.max_new_tokens = 10;
  GenerationOutput free_run = generate(m, prompt, at::ones_like(prompt), options);
  const int64_t stop = free_run.tokens[0][2].item<int64_t>();
  options.stop_tokens = {stop};
  options.pad_token_id = 49;
  options.stop_condition = [](int64_t row, const std::vector<int64_t>& ids) { return row == 1 && ids.size() == 4; };
  GenerationOutput out = generate(m, prompt, at::ones_like(prompt), options);
  int64_t first_stop = 0;
  while (free_run.tokens[0][first_stop].item<int64_t>() != stop) ++first_stop;
  EXPECT_EQ(out.lengths[0].item<int64_t>(), first_stop + 1);
  EXPECT_EQ(out.lengths[1].item<int64_t>(), std::min<int64_t>(4, out.lengths[1].item<int64_t>()));
  for (int64_t t = first_stop + 1; t < out.tokens.size(1); ++t) {
    EXPECT_EQ(out.tokens[0][t].item<int64_t>(), 49);
    EXPECT_EQ(out.logprobs[0][t].item<float>(), 0.0f);
  }
}

TEST(Generation, RejectsRightPaddedPrompts) {
  DecoderModel m = tiny_llama(7);
  at::Tensor ids = at::randint(50, {1, 3}, at::kLong);
  EXPECT_THROW(generate(m, ids, at::tensor({1, 1, 0}, at::kLong).unsqueeze(0), GenerationOptions{}), aln::Error);
}

// Static steps (one shape every step: the whole cache behind a mask, what a CUDA graph replays) give
// the dynamic steps' tokens, and log-probs within float32 rounding (the extra masked positions are
// zeros in the sums, which may be blocked differently): greedy and sampled, left-padded rows ending
// at different steps, Llama and GPT-2.
TEST(Generation, StaticStepsGiveTheDynamicStepsOutput) {
  ModelConfig gpt2;
  gpt2.family = Family::kGpt2;
  gpt2.vocab_size = 50;
  gpt2.hidden_size = 32;
  gpt2.num_layers = 2;
  gpt2.num_heads = 4;
  gpt2.num_kv_heads = 4;
  gpt2.head_dim = 8;
  gpt2.intermediate_size = 64;
  gpt2.max_position = 128;
  for (const DecoderModel& m : {tiny_llama(9), DecoderModel::random_init(gpt2, 9)}) {
    at::manual_seed(9);
    at::Tensor ids = at::randint(1, 50, {3, 6}, at::kLong);
    at::Tensor mask = at::ones({3, 6}, at::kLong);
    mask[1].narrow(0, 0, 2).fill_(0);
    mask[2].narrow(0, 0, 5).fill_(0);
    for (const Decoding decoding : {Decoding::kGreedy, Decoding::kSample}) {
      GenerationOptions dynamic;
      dynamic.decoding = decoding;
      dynamic.seed = 4;
      dynamic.max_new_tokens = 20;
      for (int64_t t = 0; t < 6; ++t) dynamic.stop_tokens.push_back(t);
      dynamic.steps = GenerationOptions::Steps::kDynamic;
      GenerationOptions fixed = dynamic;
      fixed.steps = GenerationOptions::Steps::kStatic;
      const GenerationOutput want = generate(m, ids, mask, dynamic);
      const GenerationOutput got = generate(m, ids, mask, fixed);
      EXPECT_GT(want.tokens.size(1), 3);
      EXPECT_TRUE(at::equal(got.tokens, want.tokens));
      EXPECT_TRUE(at::equal(got.lengths, want.lengths));
      EXPECT_TRUE(at::allclose(got.logprobs, want.logprobs, 1e-5, 1e-5))
          << (got.logprobs - want.logprobs).abs().max().item<float>();
      EXPECT_FALSE(got.replayed_graph);
      // On the CPU kAuto is the dynamic steps, bit for bit.
      GenerationOptions automatic = dynamic;
      automatic.steps = GenerationOptions::Steps::kAuto;
      EXPECT_TRUE(at::equal(generate(m, ids, mask, automatic).logprobs, want.logprobs));
    }
  }
}

// Aln's CUDA graph library (core/model/cuda/graph_library.cpp) loads beside LibTorch's CUDA backend
// with every symbol resolved, on this machine too (no GPU is needed to load it); a build without it
// says so.
TEST(CudaGraphLibrary, LoadsWhereTheBuildHasIt) {
  const absl::Status s = CudaGraph::available();
  if (!s.ok()) {
    EXPECT_TRUE(absl::StrContains(s.message(), "no CUDA graph library") ||
                absl::StrContains(s.message(), "CUDA backend"))
        << s.message();
    GTEST_SKIP() << s.message();
  }
}

// On a GPU (skipped elsewhere): the decoding steps are captured into a CUDA graph and replayed, and
// give the eager static steps' tokens and log-probs (the same kernels), greedy and sampled, float32
// and bfloat16; and the CPU's greedy tokens in float32.
TEST(GenerationOnGpu, CudaGraphStepsGiveTheEagerStepsOutput) {
  absl::StatusOr<c10::Device> device = cuda_device_for(0);
  if (!device.ok()) GTEST_SKIP() << device.status().message();
  const absl::Status graphs = CudaGraph::available();
  ASSERT_TRUE(graphs.ok()) << graphs.message();
  DecoderModel m = tiny_llama(12);
  at::manual_seed(12);
  at::Tensor ids = at::randint(1, 50, {4, 7}, at::kLong);
  at::Tensor mask = at::ones({4, 7}, at::kLong);
  mask[2].narrow(0, 0, 3).fill_(0);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const DecoderModel on_gpu = m.to(*device, dtype);
    for (const Decoding decoding : {Decoding::kGreedy, Decoding::kSample}) {
      GenerationOptions options;
      options.decoding = decoding;
      options.seed = 8;
      options.max_new_tokens = 30;
      options.stop_tokens = {0, 1, 2};
      GenerationOptions eager = options;
      eager.steps = GenerationOptions::Steps::kStatic;
      const GenerationOutput graph = generate(on_gpu, ids, mask, options);
      const GenerationOutput want = generate(on_gpu, ids, mask, eager);
      EXPECT_TRUE(graph.replayed_graph) << graph.graph_error << " / " << CudaGraph::available().message();
      EXPECT_FALSE(want.replayed_graph);
      EXPECT_TRUE(at::equal(graph.tokens, want.tokens));
      EXPECT_TRUE(at::allclose(graph.logprobs, want.logprobs, 1e-5, 1e-5));
      if (dtype == at::kFloat && decoding == Decoding::kGreedy) {
        options.steps = GenerationOptions::Steps::kDynamic;
        EXPECT_TRUE(at::equal(graph.tokens.cpu(), generate(m, ids, mask, options).tokens));
      }
    }
  }
}

}  // namespace
}  // namespace aln::model
