// The engine's distributed pieces in one process, ranks as threads (distributed/thread_backend.h):
// gradient sums (plain, deterministic, overlapped with backward), the overlap's bucket order, ZeRO-1
// and the pipeline executor, each against the same arithmetic done without ranks. The mpirun
// end-to-end tests (tests/dist) check the same on real processes.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>

#include "core/model/decoder.h"
#include "distributed/thread_backend.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/evaluate.h"
#include "trainers/engine/fully_sharded.h"
#include "trainers/engine/overlap.h"
#include "trainers/engine/pipeline.h"
#include "trainers/engine/reference_cache.h"
#include "trainers/engine/sharded_adamw.h"
#include "trainers/engine/sharded_learned.h"
#include "trainers/hair/shadow_rewards.h"
#include "trainers/trainer.h"

namespace aln::engine {
namespace {

using model::DecoderModel;
using model::ModelConfig;
constexpr std::chrono::milliseconds kWait{20000};

ModelConfig tiny(int64_t layers, bool tied) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 61;
  c.hidden_size = 16;
  c.num_layers = layers;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.intermediate_size = 24;
  c.max_position = 32;
  c.tie_embeddings = tied;
  return c;
}

// A batch that depends on `rank` (each rank sees different data).
std::pair<at::Tensor, at::Tensor> batch(int rank, int64_t vocab) {
  at::Tensor ids = (at::arange(2 * 7, at::kLong).view({2, 7}) * (rank + 3) + rank) % vocab;
  return {ids, at::ones({2, 7}, at::kLong)};
}

// Mean next-token negative log-likelihood.
at::Tensor lm_loss(const DecoderModel& m, const at::Tensor& ids, const at::Tensor& mask) {
  at::Tensor logp = m.logits(ids, mask).narrow(1, 0, ids.size(1) - 1).log_softmax(-1);
  at::Tensor target = ids.narrow(1, 1, ids.size(1) - 1).unsqueeze(-1);
  return -logp.gather(-1, target).mean();
}

// Gradients of rank r's loss, in a fresh copy of `model`.
optim::TensorMap local_gradients(const DecoderModel& model, int rank) {
  DecoderModel m = model.to(at::kFloat);
  m.set_requires_grad(true);
  auto [ids, mask] = batch(rank, m.config().vocab_size);
  lm_loss(m, ids, mask).backward();
  optim::TensorMap grads;
  for (auto& [name, p] : m.tensors()) grads.emplace(name, p.grad().clone());
  return grads;
}

// (g0 + g1) + g2 ...: what deterministic sums must give.
optim::TensorMap rank_order_sum(const DecoderModel& model, int ranks) {
  optim::TensorMap total = local_gradients(model, 0);
  for (int r = 1; r < ranks; ++r) {
    for (auto& [name, g] : local_gradients(model, r)) total.at(name).add_(g);
  }
  return total;
}

enum class Sum { kBuckets, kOverlapped };

// Every rank's gradients after summing them over `ranks` threads.
std::vector<optim::TensorMap> summed_on_ranks(const DecoderModel& model, int ranks, Sum how, bool deterministic) {
  std::vector<optim::TensorMap> out(static_cast<size_t>(ranks));
  dist::run_thread_ranks(ranks, [&](dist::Communicator& comm) {
    const DataParallel dp(&comm, kWait);
    DecoderModel m = model.to(at::kFloat);
    m.set_requires_grad(true);
    auto [ids, mask] = batch(comm.rank(), m.config().vocab_size);
    at::Tensor loss = lm_loss(m, ids, mask);
    if (how == Sum::kOverlapped) {
      OverlappedGradientSum overlapped(dp, m.tensors(), deterministic, nullptr, /*bucket_bytes=*/2048);
      loss.backward();
      overlapped.finish();
    } else {
      loss.backward();
      dp.all_reduce_gradients(m.tensors(), deterministic, /*bucket_bytes=*/4096);
    }
    for (auto& [name, p] : m.tensors()) out[static_cast<size_t>(comm.rank())].emplace(name, p.grad().clone());
  });
  return out;
}

TEST(DataParallelThreads, GradientSumsEqualTheRankOrderSum) {
  const DecoderModel model = DecoderModel::random_init(tiny(3, false), 11);
  for (int ranks : {2, 3}) {
    const optim::TensorMap want = rank_order_sum(model, ranks);
    for (Sum how : {Sum::kBuckets, Sum::kOverlapped}) {
      for (bool deterministic : {true, false}) {
        const auto got = summed_on_ranks(model, ranks, how, deterministic);
        for (const auto& per_rank : got) {
          for (const auto& [name, g] : want) {
            // The thread backend adds in rank order in both modes, so both are exact here.
            EXPECT_TRUE(at::equal(per_rank.at(name), g)) << name << " ranks " << ranks << " overlapped "
                                                         << (how == Sum::kOverlapped) << " det " << deterministic;
          }
        }
      }
    }
  }
}

TEST(DataParallelThreads, ScalarsGatherAndBroadcast) {
  dist::run_thread_ranks(3, [](dist::Communicator& comm) {
    const DataParallel dp(&comm, kWait);
    EXPECT_EQ(dp.sum(static_cast<double>(comm.rank() + 1)), 6.0);
    EXPECT_EQ(dp.gather({static_cast<double>(comm.rank()), 10.0}), (std::vector<double>{0, 10, 1, 10, 2, 10}));
    optim::TensorMap t{{"w", at::full({2}, comm.rank(), at::kFloat)}};
    dp.broadcast(t);
    EXPECT_TRUE(at::equal(t.at("w"), at::zeros({2}, at::kFloat)));
  });
}

// The overlap's buckets follow the order backward produces gradients: after the first step the
// output projection's bucket starts first and the layers follow from the last to the first
// (numerically: layers.11 before layers.10 before layers.9 ... before layers.2), embedding last.
TEST(DataParallelThreads, OverlapBucketsFollowTheBackwardOrderOnTwelveLayers) {
  const DecoderModel model = DecoderModel::random_init(tiny(12, false), 5);
  std::vector<std::vector<std::vector<std::string>>> first(2), second(2);
  dist::run_thread_ranks(2, [&](dist::Communicator& comm) {
    const DataParallel dp(&comm, kWait);
    DecoderModel m = model.to(at::kFloat);
    m.set_requires_grad(true);
    GradientReadyOrder order;
    auto [ids, mask] = batch(comm.rank(), m.config().vocab_size);
    for (int step = 0; step < 2; ++step) {
      // One parameter per bucket, so the bucket order is the parameter order.
      OverlappedGradientSum overlapped(dp, m.tensors(), true, &order, /*bucket_bytes=*/1);
      (step == 0 ? first : second)[static_cast<size_t>(comm.rank())] = overlapped.bucket_names();
      lm_loss(m, ids, mask).backward();
      overlapped.finish();
      EXPECT_TRUE(order.recorded());
      for (auto& [name, p] : m.tensors()) p.mutable_grad() = at::Tensor();
    }
  });
  EXPECT_EQ(second[0], second[1]);  // the ranks agree (rank 0's record)
  std::vector<std::string> order;
  for (const auto& b : second[0]) {
    ASSERT_EQ(b.size(), 1u);
    order.push_back(b[0]);
  }
  ASSERT_EQ(order.size(), model.tensors().size());
  EXPECT_EQ(order.front(), "lm_head.weight");
  EXPECT_EQ(order.back(), "model.embed_tokens.weight");
  auto position = [&](const std::string& name) { return std::find(order.begin(), order.end(), name) - order.begin(); };
  for (int layer = 11; layer > 0; --layer) {
    const std::string later = "model.layers." + std::to_string(layer) + ".mlp.down_proj.weight";
    const std::string earlier = "model.layers." + std::to_string(layer - 1) + ".mlp.down_proj.weight";
    EXPECT_LT(position(later), position(earlier)) << later << " vs " << earlier;
    // Every tensor of a layer comes before every tensor of the layer below it.
    for (const auto& [name, t] : model.tensors()) {
      if (DecoderModel::layer_of(model.config(), name) != layer) continue;
      for (const auto& [below, u] : model.tensors()) {
        if (DecoderModel::layer_of(model.config(), below) == layer - 1) {
          EXPECT_LT(position(name), position(below)) << name << " vs " << below;
        }
      }
    }
  }
  // The first step's guess already orders layers numerically (the lexicographic order put
  // layers.1 and layers.10/11 next to each other).
  std::vector<std::string> guess;
  for (const auto& b : first[0]) guess.push_back(b[0]);
  auto at_guess = [&](const std::string& name) { return std::find(guess.begin(), guess.end(), name) - guess.begin(); };
  EXPECT_LT(at_guess("model.layers.11.mlp.down_proj.weight"), at_guess("model.layers.2.mlp.down_proj.weight"));
  EXPECT_LT(at_guess("model.layers.2.mlp.down_proj.weight"), at_guess("model.layers.1.mlp.down_proj.weight"));
}

// ZeRO-1: moments sharded over the ranks give the unsharded optimizer's parameters bit for bit.
TEST(DataParallelThreads, ShardedAdamWEqualsUnsharded) {
  const DecoderModel model = DecoderModel::random_init(tiny(2, true), 3);
  const optim::AdamWOptions options{1e-2, 0.9, 0.999, 1e-8, 0.01};
  auto train = [&](int ranks, bool shard) {
    std::vector<optim::TensorMap> params(static_cast<size_t>(ranks));
    std::vector<double> shares(static_cast<size_t>(ranks));
    dist::run_thread_ranks(ranks, [&](dist::Communicator& comm) {
      const DataParallel dp(&comm, kWait);
      DecoderModel m = model.to(at::kFloat);
      m.set_requires_grad(true);
      ShardedAdamW adamw(options, dp, shard ? Sharding::kOptimizer : Sharding::kNone, m.tensors());
      for (int step = 0; step < 3; ++step) {
        auto [ids, mask] = batch(step, m.config().vocab_size);  // the same data on every rank
        lm_loss(m, ids, mask).backward();
        adamw.step(m.tensors(), 1e-2);
        for (auto& [name, p] : m.tensors()) p.mutable_grad() = at::Tensor();
      }
      shares[static_cast<size_t>(comm.rank())] = adamw.owned_share();
      for (auto& [name, p] : m.tensors()) params[static_cast<size_t>(comm.rank())].emplace(name, p.detach().clone());
    });
    return std::pair{params, shares};
  };
  const auto [reference, unused] = train(1, false);
  for (int ranks : {2, 3}) {
    const auto [params, shares] = train(ranks, true);
    double total_share = 0;
    for (double s : shares) total_share += s;
    EXPECT_NEAR(total_share, 1.0, 1e-12);
    for (const auto& per_rank : params) {
      for (const auto& [name, p] : reference[0]) EXPECT_TRUE(at::equal(per_rank.at(name), p)) << name;
    }
  }
}

// ZeRO-2: gradients reduce-scattered (in buckets small enough that there are several, two in
// flight) and clipped by the norm over the ranks' ranges give the parameters of the all-reduce path
// with the same clipping, bit for bit, with each rank on different data; the norms agree to float64
// rounding (their sums of squares add in another order).
TEST(DataParallelThreads, ShardedGradientsEqualAllReducedOnes) {
  const DecoderModel model = DecoderModel::random_init(tiny(2, false), 5);
  const optim::AdamWOptions options{1e-2, 0.9, 0.999, 1e-8, 0.01};
  struct Run {
    std::vector<optim::TensorMap> params;
    std::vector<std::vector<double>> norms;
    std::vector<int64_t> gradient_bytes;
  };
  auto train = [&](int ranks, Sharding sharding, bool deterministic) {
    Run run;
    run.params.resize(static_cast<size_t>(ranks));
    run.norms.resize(static_cast<size_t>(ranks));
    run.gradient_bytes.resize(static_cast<size_t>(ranks));
    dist::run_thread_ranks(ranks, [&](dist::Communicator& comm) {
      const size_t r = static_cast<size_t>(comm.rank());
      const DataParallel dp(&comm, kWait);
      DecoderModel m = model.to(at::kFloat);
      m.set_requires_grad(true);
      ShardedAdamW adamw(options, dp, sharding, m.tensors());
      for (int step = 0; step < 3; ++step) {
        auto [ids, mask] = batch(comm.rank() * 5 + step, m.config().vocab_size);
        lm_loss(m, ids, mask).backward();
        if (adamw.shards_gradients()) {
          adamw.reduce_scatter_gradients(m.tensors(), deterministic, /*bucket_bytes=*/1024);
          for (const auto& [name, p] : m.tensors()) EXPECT_FALSE(p.grad().defined()) << "released: " << name;
        } else {
          dp.all_reduce_gradients(m.tensors(), deterministic, /*bucket_bytes=*/4096);
        }
        // Small enough that every step clips.
        const at::Tensor norm = adamw.clip_grad_norm(m.tensors(), 0.05, {}, "");
        run.norms[r].push_back(norm.item<double>());
        adamw.step(m.tensors(), 1e-2);
        adamw.clear_gradients(m.tensors());
      }
      run.gradient_bytes[r] = adamw.gradient_bytes();
      for (auto& [name, p] : m.tensors()) run.params[r].emplace(name, p.detach().clone());
    });
    return run;
  };
  for (int ranks : {2, 3}) {
    for (bool deterministic : {true, false}) {
      const Run want = train(ranks, Sharding::kNone, deterministic);
      const Run got = train(ranks, Sharding::kGradients, deterministic);
      for (size_t r = 0; r < static_cast<size_t>(ranks); ++r) {
        EXPECT_LT(got.gradient_bytes[r], want.gradient_bytes[r] / ranks + 64);
        for (size_t k = 0; k < want.norms[r].size(); ++k) {
          EXPECT_GT(want.norms[r][k], 0.05);
          EXPECT_NEAR(got.norms[r][k], want.norms[r][k], 1e-12 * want.norms[r][k]);
        }
        for (const auto& [name, p] : want.params[0]) {
          EXPECT_TRUE(at::equal(got.params[r].at(name), p)) << ranks << " ranks, rank " << r << ": " << name;
        }
      }
    }
  }
}

// FSDP (parallel.policy.shard: full): layers gathered one at a time around their forward and
// backward, gradients reduce-scattered during backward, AdamW on the shards. 2 and 3 ranks on
// different data, every step clipped, end bit for bit where the all-reduce run ends (tied and untied
// heads); between passes no layer is held whole; the gathered optimizer state equals the unsharded
// one, and loading it into a new sharded run continues exactly as the unsharded run continues.
TEST(DataParallelThreads, FullyShardedEqualsAllReduced) {
  const optim::AdamWOptions options{1e-2, 0.9, 0.999, 1e-8, 0.01};
  struct Run {
    std::vector<optim::TensorMap> params, state;
    std::vector<std::vector<double>> norms;
    std::vector<int64_t> held_layer_bytes, peak_layer_bytes, largest_layer_bytes, prefetched, dropped;
  };
  for (bool tied : {true, false}) {
    const DecoderModel model = DecoderModel::random_init(tiny(3, tied), tied ? 21 : 22);
    auto train = [&](int ranks, bool full, int steps, const optim::TensorMap* resume_params,
                     const optim::TensorMap* resume_state) {
      Run run;
      for (auto* v : {&run.params, &run.state}) v->resize(static_cast<size_t>(ranks));
      run.norms.resize(static_cast<size_t>(ranks));
      for (auto* v :
           {&run.held_layer_bytes, &run.peak_layer_bytes, &run.largest_layer_bytes, &run.prefetched, &run.dropped}) {
        v->resize(static_cast<size_t>(ranks));
      }
      dist::run_thread_ranks(ranks, [&](dist::Communicator& comm) {
        const size_t r = static_cast<size_t>(comm.rank());
        const DataParallel dp(&comm, kWait);
        DecoderModel m = model.to(at::kFloat);
        if (resume_params != nullptr) {
          for (auto& [name, p] : m.tensors()) p = resume_params->at(name).clone();
        }
        m.set_requires_grad(true);
        std::unique_ptr<FullySharded> fs;
        if (full) fs = std::make_unique<FullySharded>(dp, m, /*deterministic=*/true);
        ShardedAdamW adamw(options, dp, full ? Sharding::kFull : Sharding::kNone, m.tensors(), fs.get());
        if (resume_state != nullptr) adamw.load_state(*resume_state);
        for (int step = 0; step < steps; ++step) {
          auto [ids, mask] = batch(comm.rank() * 5 + step, m.config().vocab_size);
          lm_loss(m, ids, mask).backward();
          if (!full) dp.all_reduce_gradients(m.tensors(), /*deterministic=*/true);
          run.norms[r].push_back(adamw.clip_grad_norm(m.tensors(), 0.05, {}, "").item<double>());
          adamw.step(m.tensors(), 1e-2);
          adamw.clear_gradients(m.tensors());
        }
        run.state[r] = adamw.state();
        if (full) {
          int64_t held = 0;
          for (const auto& [name, p] : m.tensors()) {
            if (DecoderModel::layer_of(m.config(), name) >= 0) held += static_cast<int64_t>(p.storage().nbytes());
          }
          run.held_layer_bytes[r] = held;
          run.peak_layer_bytes[r] = fs->peak_layer_bytes();
          run.largest_layer_bytes[r] = fs->largest_layer_bytes();
          // Evaluation without autograd gathers and frees the same way and gives the whole model's logits.
          const DecoderModel whole = fs->whole();
          auto [ids, mask] = batch(7, m.config().vocab_size);
          at::NoGradGuard no_grad;
          EXPECT_TRUE(at::allclose(m.logits(ids, mask), whole.logits(ids, mask), 1e-5, 1e-6));
          // After a pass without autograd nothing holds the outer unit: pass_done frees it, and
          // the next pass gathers it again.
          const at::Tensor before = m.logits(ids, mask);
          EXPECT_GT(m.output_weight().storage().nbytes(), 0u);
          fs->pass_done();
          EXPECT_EQ(m.output_weight().storage().nbytes(), 0u);
          EXPECT_TRUE(at::equal(m.logits(ids, mask), before));
          run.prefetched[r] = fs->prefetches_used();
          run.dropped[r] = fs->prefetches_dropped();
          for (const auto& [name, p] : whole.tensors()) run.params[r].emplace(name, p.clone());
        } else {
          for (auto& [name, p] : m.tensors()) run.params[r].emplace(name, p.detach().clone());
        }
      });
      return run;
    };
    for (int ranks : {2, 3}) {
      const Run want = train(ranks, false, 3, nullptr, nullptr);
      const Run got = train(ranks, true, 3, nullptr, nullptr);
      for (size_t r = 0; r < static_cast<size_t>(ranks); ++r) {
        EXPECT_EQ(got.held_layer_bytes[r], 0) << "a layer stayed gathered";
        EXPECT_GT(got.peak_layer_bytes[r], 0);
        EXPECT_LE(got.peak_layer_bytes[r], 2 * got.largest_layer_bytes[r]);
        // Each layer's gather was started before it was needed (forward: all 3, layer 0's with the
        // embedding's; backward: all but the last layer's): 3 steps x (3 + 2) + 3 for each of the
        // evaluation's three passes, and an untied head's in every forward pass (with the last
        // layer's), none dropped.
        EXPECT_EQ(got.prefetched[r], 3 * (3 + 2) + 3 * 3 + (tied ? 0 : 3 + 3));
        EXPECT_EQ(got.dropped[r], 0);
        for (size_t k = 0; k < want.norms[r].size(); ++k) {
          EXPECT_GT(want.norms[r][k], 0.05);
          EXPECT_NEAR(got.norms[r][k], want.norms[r][k], 1e-12 * want.norms[r][k]);
        }
        for (const auto& [name, p] : want.params[0]) {
          EXPECT_TRUE(at::equal(got.params[r].at(name), p)) << ranks << " ranks, rank " << r << ": " << name;
        }
        // Rank 0 alone gets the gathered moments (it writes checkpoints).
        EXPECT_EQ(got.state[r].size(), r == 0 ? want.state[0].size() : 1u);
        for (const auto& [key, t] : r == 0 ? want.state[0] : optim::TensorMap{}) {
          EXPECT_TRUE(at::equal(got.state[r].at(key), t)) << ranks << " ranks, state " << key;
        }
      }
      // Resume: the gathered state into a new sharded run (on another rank count) and two more steps.
      const int other = ranks == 2 ? 3 : 2;
      const Run cont_want = train(other, false, 2, &want.params[0], &want.state[0]);
      const Run cont_got = train(other, true, 2, &got.params[0], &got.state[0]);
      for (const auto& [name, p] : cont_want.params[0]) {
        EXPECT_TRUE(at::equal(cont_got.params[0].at(name), p)) << "resumed on " << other << ": " << name;
      }
    }
  }
}

// A sharded start never holds the whole model: shards filled from the parameters' shapes alone, by
// whole tensors one at a time (a seeded random model made tensor by tensor) or by each rank's own
// ranges (as read from a sharded checkpoint), equal the shards cut from the whole model, and a pass
// gives the same logits.
TEST(DataParallelThreads, FullyShardedStartsFromShapesAlone) {
  for (bool tied : {true, false}) {
    const ModelConfig config = tiny(3, tied);
    const DecoderModel model = DecoderModel::random_init(config, 31);
    auto shapes_only = [&config] {
      model::TensorMap shapes;
      for (const auto& [name, shape] : DecoderModel::expected_shapes(config)) {
        shapes.emplace(name, at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta)));
      }
      return *DecoderModel::from_tensors(config, std::move(shapes));
    };
    for (int ranks : {2, 3}) {
      dist::run_thread_ranks(ranks, [&](dist::Communicator& comm) {
        const DataParallel dp(&comm, kWait);
        DecoderModel whole = model.to(at::kFloat);
        const FullySharded cut(dp, whole, /*deterministic=*/true);
        DecoderModel streamed_model = shapes_only();
        FullySharded streamed(dp, streamed_model, true, FullySharded::ShapesOnly{});
        DecoderModel::random_init_each(
            config, 31, [&streamed](const std::string& name, const at::Tensor& t) { streamed.take(name, t); });
        DecoderModel parts_model = shapes_only();
        FullySharded from_parts(dp, parts_model, true, FullySharded::ShapesOnly{});
        optim::TensorMap parts;
        for (const ShardRange& r : from_parts.ranges()) {
          parts.emplace(r.name, model.tensors().at(r.name).reshape(-1).narrow(0, r.offset, r.numel));
        }
        from_parts.take_parts(parts);
        const optim::TensorMap want = cut.parameter_parts();
        const optim::TensorMap got_streamed = streamed.parameter_parts(), got_parts = from_parts.parameter_parts();
        EXPECT_EQ(got_streamed.size(), want.size());
        for (const auto& [name, t] : want) {
          EXPECT_TRUE(at::equal(got_streamed.at(name), t)) << ranks << " ranks: " << name;
          EXPECT_TRUE(at::equal(got_parts.at(name), t)) << ranks << " ranks: " << name;
        }
        // The layout covers every parameter once, in order.
        for (const auto& [name, t] : cut.layout()) {
          int64_t next = 0;
          for (const ShardPart& p : t.parts) {
            EXPECT_EQ(p.offset, next) << name;
            next += p.numel;
          }
          EXPECT_EQ(next, model.tensors().at(name).numel()) << name;
        }
        // The reference cache's key: the same from the units gathered one at a time as from the whole
        // weights (a sharded run and an unsharded one share cached log-probs).
        EXPECT_EQ(model_fingerprint(streamed_model), model_fingerprint(model));
        auto [ids, mask] = batch(3, config.vocab_size);
        at::NoGradGuard no_grad;
        EXPECT_TRUE(at::equal(streamed_model.logits(ids, mask), whole.logits(ids, mask)));
      });
    }
  }
}

// The pipeline executor: 2 and 3 stages give the whole model's weighted loss and gradients.
// Held-out evaluation split over 2 and 3 ranks (each evaluates every size()-th micro-batch; 7
// batches, so the ranks get unequal shares) gives every rank the numbers one process computes,
// bit for bit: DPO's loss and reward metrics and the policy-alone safety accuracies.
TEST(DataParallelThreads, SplitEvaluationEqualsOneProcess) {
  const DecoderModel policy = DecoderModel::random_init(tiny(2, true), 21);
  std::vector<buffer::Example> eval;
  for (int i = 0; i < 13; ++i) {
    buffer::Example e;
    e.prompt = {1 + i % 5, 2, 3 + i % 7};
    e.chosen = {4 + i % 11, 5, 6 + i % 3};
    e.rejected = {7 + i % 13, 8 + i % 2};
    e.unsafe_chosen = i % 3 == 0 ? 1 : 0;
    e.unsafe_rejected = i % 2;
    e.reference_chosen = -5.0 - 0.1 * i;
    e.reference_rejected = -6.0 + 0.07 * i;
    eval.push_back(e);
  }
  aln::v1::StageSpec stage;
  stage.mutable_trainer()->mutable_dpo()->set_beta(0.1);
  trainers::TrainerRegistry registry("trainer");
  trainers::register_all(registry);
  auto alone = registry.create("dpo", stage);
  ASSERT_TRUE(alone.ok()) << alone.status();
  const MetricMap want = evaluate(**alone, policy, nullptr, eval, /*micro=*/2, /*pad_id=*/0);
  ASSERT_EQ(want.count("rewards_accuracy"), 1u);
  ASSERT_EQ(want.count("safe_vs_unsafe_accuracy"), 1u);
  for (int ranks : {2, 3}) {
    std::vector<MetricMap> got(static_cast<size_t>(ranks));
    dist::run_thread_ranks(ranks, [&](dist::Communicator& comm) {
      auto trainer = registry.create("dpo", stage);
      ASSERT_TRUE(trainer.ok());
      const DataParallel dp(&comm, kWait);
      got[static_cast<size_t>(comm.rank())] =
          evaluate(**trainer, policy, nullptr, eval, 2, 0, true, nullptr, nullptr, &dp);
    });
    for (const MetricMap& m : got) {
      ASSERT_EQ(m.size(), want.size()) << ranks;
      for (const auto& [k, v] : want) EXPECT_EQ(m.at(k), v) << k << " on " << ranks << " ranks";
    }
  }
}

TEST(PipelineThreads, StagesEqualTheWholeModel) {
  const DecoderModel model = DecoderModel::random_init(tiny(3, false), 9);
  const std::vector<double> weights = {0.25, 0.75};
  // The whole model: loss_0 * w0 + loss_1 * w1, accumulated micro-batch by micro-batch.
  DecoderModel whole = model.to(at::kFloat);
  whole.set_requires_grad(true);
  double whole_loss = 0;
  for (int mb = 0; mb < 2; ++mb) {
    auto [ids, mask] = batch(mb, whole.config().vocab_size);
    at::Tensor loss = lm_loss(whole, ids, mask);
    whole_loss += loss.item<double>() * weights[static_cast<size_t>(mb)];
    (loss * weights[static_cast<size_t>(mb)]).backward();
  }
  for (int stages : {2, 3}) {
    for (auto schedule : {dist::PipelineSchedule::kGpipe, dist::PipelineSchedule::kOneFOneB}) {
      std::mutex mu;
      optim::TensorMap grads;
      double last_loss = 0;
      dist::run_thread_ranks(stages, [&](dist::Communicator& comm) {
        Pipeline pipeline(&comm, kWait);
        const int64_t per = 3 / stages;
        const int64_t first = comm.rank() * per, end = comm.rank() + 1 == stages ? 3 : first + per;
        DecoderModel stage = model.to(at::kFloat).stage(first, end);
        stage.set_requires_grad(true);
        auto outs = pipeline.train_step(
            stage, schedule,
            [&](int mb) {
              auto [ids, mask] = batch(mb, stage.config().vocab_size);
              trainers::LossOutput out;
              out.loss = lm_loss(stage, ids, mask);
              out.tokens = ids.numel();
              return out;
            },
            weights);
        std::lock_guard<std::mutex> lock(mu);
        for (auto& [name, p] : stage.tensors()) grads.emplace(name, p.grad().clone());
        if (pipeline.last()) {
          for (size_t mb = 0; mb < outs.size(); ++mb) last_loss += outs[mb].loss.item<double>() * weights[mb];
        }
      });
      EXPECT_NEAR(last_loss, whole_loss, 1e-6 * std::abs(whole_loss));
      ASSERT_EQ(grads.size(), whole.tensors().size());
      for (const auto& [name, p] : whole.tensors()) {
        const double scale = p.grad().abs().max().item<double>() + 1e-12;
        EXPECT_LE((grads.at(name) - p.grad()).abs().max().item<double>(), 1e-5 * scale) << name << " stages " << stages;
      }
    }
  }
}

// HAIR's shadow reward models beside a fully sharded policy (ShardedLearnedMaker): 2 ranks on
// different data take, bit for bit, the IRL updates whole models take with their gradients summed
// (deterministic sums, one pass per update as HAIR makes it), while each rank keeps half the
// parameters; rank 1, with nothing for model 1, runs its pass on a row it ignores. Put together on
// rank 0, saved and read back into new sharded models, they score bit for bit as before.
TEST(DataParallelThreads, ShardedShadowRewardsLearnAsWholeOnes) {
  const DecoderModel base = DecoderModel::random_init(tiny(2, false), 31);
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("aln_shadows_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<std::vector<at::Tensor>> scores(2, std::vector<at::Tensor>(2));  // [sharded][rank]
  for (bool sharded : {false, true}) {
    dist::run_thread_ranks(2, [&](dist::Communicator& comm) {
      const DataParallel dp(&comm, kWait);
      std::shared_ptr<ShardedLearnedMaker> maker;
      if (sharded) maker = std::make_shared<ShardedLearnedMaker>(dp, /*deterministic=*/true);
      trainers::hair::ShadowRewards shadows({"a", "b"}, base, false, 1e-2, maker);
      EXPECT_EQ(shadows.collective(), sharded);
      if (sharded) {
        const ShardedLearnedMaker::Kept kept = maker->kept();
        EXPECT_EQ(kept.models, 2);
        EXPECT_LE(kept.bytes, kept.whole_bytes / 2 + 64);
      }
      std::function<void(optim::TensorMap&)> sum;
      if (!sharded) sum = [&dp](optim::TensorMap& g) { dp.all_reduce_gradients(g, true); };
      const at::Tensor any = at::zeros({1}, at::kLong);
      for (int step = 0; step < 3; ++step) {
        for (size_t m = 0; m < 2; ++m) {
          DecoderModel& model = shadows.model(m);
          model.set_requires_grad(true);
          auto [demo, demo_mask] = batch(comm.rank() * 7 + step, model.config().vocab_size);
          auto [sample, sample_mask] = batch(comm.rank() * 7 + step + 3, model.config().vocab_size);
          if (m == 1 && comm.rank() == 1) {
            if (sharded) {  // the same pass on one row, no gradient
              (model.scores(demo.index_select(0, any), demo_mask.index_select(0, any)).sum() * 0.0).backward();
            }
          } else {
            // HAIR's one pass: demonstrations and samples together.
            const at::Tensor both = model.scores(at::cat({demo, sample}), at::cat({demo_mask, sample_mask}));
            at::softplus(-(both.narrow(0, 0, 2) - both.narrow(0, 2, 2))).sum().backward();
          }
          EXPECT_GT(shadows.step(m, sum), 0.0);
          model.set_requires_grad(false);
        }
      }
      at::NoGradGuard no_grad;
      auto [probe, probe_mask] = batch(11, base.config().vocab_size);
      at::Tensor both =
          at::cat({shadows.model(0).scores(probe, probe_mask), shadows.model(1).scores(probe, probe_mask)});
      scores[sharded][static_cast<size_t>(comm.rank())] = both;
      if (!sharded) return;
      shadows.gather();
      if (comm.rank() == 0) {
        EXPECT_TRUE(shadows.save(dir).ok());
      }
      dp.sum(0.0);  // saved before anyone reads
      trainers::hair::ShadowRewards again({"a", "b"}, base, false, 1e-2, maker);
      ASSERT_TRUE(again.load(dir).ok());
      EXPECT_TRUE(at::equal(
          at::cat({again.model(0).scores(probe, probe_mask), again.model(1).scores(probe, probe_mask)}), both));
    });
  }
  for (size_t r = 0; r < 2; ++r) {
    EXPECT_TRUE(at::equal(scores[1][r], scores[0][r])) << scores[1][r] << scores[0][r];
    // Score heads start at zero: every score was 0 before the updates.
    EXPECT_GT(scores[0][r].abs().max().item<float>(), 1e-4f) << "the shadow models did not learn";
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace aln::engine
