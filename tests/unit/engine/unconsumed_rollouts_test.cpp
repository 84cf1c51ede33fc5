// Rollouts generated ahead on rollout ranks and not yet trained on, kept with checkpoints
// (trainers/engine/unconsumed_rollouts.h): put together from every policy rank, written, read back
// by each rank and taken by generate() without a message (no rollout rank runs here: a request that
// was not kept would have nowhere to go). rollout_ranks_e2e runs the same around a SIGKILL under mpirun.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/model/decoder.h"
#include "distributed/service.h"
#include "distributed/thread_backend.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/rollout_role.h"
#include "trainers/engine/unconsumed_rollouts.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;
constexpr std::chrono::milliseconds kWait{20000};

RolloutPlacement placement(dist::Communicator* channel) {
  RolloutPlacement p;
  p.channel = channel;
  p.policy_ranks = channel->size();
  p.first_rollout_rank = channel->size();  // past the channel: any message would fail
  p.rollout_ranks = 1;
  p.timeout = kWait;
  p.long_wait = kWait;
  return p;
}

struct Asked {
  at::Tensor ids, mask;
  model::GenerationOptions options;
  model::GenerationOutput answer;
};

// Policy rank r's request for its i-th micro-batch (prompts and seed differ by rank and index).
Asked asked(int rank, int i) {
  Asked a;
  a.ids = at::arange(6, at::kLong).view({2, 3}) + 10 * rank + i;
  a.mask = at::ones({2, 3}, at::kLong);
  a.options.decoding = model::Decoding::kSample;
  a.options.max_new_tokens = 4;
  a.options.seed = 1000 + 10 * static_cast<uint64_t>(rank) + static_cast<uint64_t>(i);
  a.answer.tokens = at::arange(8, at::kLong).view({2, 4}) * (rank + 1) + i;
  a.answer.logprobs = -at::rand({2, 4}, at::kFloat);
  a.answer.lengths = at::tensor({4, 2 + i}, at::kLong);
  return a;
}

RemoteSampler::Answer kept(const Asked& a, int64_t stage, int64_t version) {
  RemoteSampler::Answer out;
  out.request = generate_request(stage, version, a.ids, a.mask, a.options).SerializeAsString();
  dist::to_proto(a.answer.tokens, out.reply.add_tensors());
  dist::to_proto(a.answer.logprobs, out.reply.add_tensors());
  dist::to_proto(a.answer.lengths, out.reply.add_tensors());
  return out;
}

TEST(UnconsumedRollouts, KeptFromEveryRankAndTakenBackWithoutAsking) {
  const fs::path dir = fs::temp_directory_path() / ("aln_unconsumed_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const model::DecoderModel sampler_model = model::DecoderModel::random_init(
      [] {
        model::ModelConfig c;
        c.model_type = "llama";
        c.vocab_size = 61;
        c.hidden_size = 16;
        c.num_layers = 1;
        c.num_heads = 2;
        c.num_kv_heads = 1;
        c.head_dim = 8;
        c.intermediate_size = 24;
        c.max_position = 32;
        return c;
      }(),
      1);
  // Rank 0 has two answers in flight, rank 1 one (what a checkpoint inside a window finds).
  std::vector<std::vector<Asked>> by_rank = {{asked(0, 0), asked(0, 1)}, {asked(1, 0)}};
  dist::run_thread_ranks(2, [&](dist::Communicator& comm) {
    const int r = comm.rank();
    const DataParallel world(&comm, kWait);
    RemoteSampler before(placement(&comm), r, nullptr, /*ahead=*/false);
    std::vector<RemoteSampler::Answer> mine;
    for (const Asked& a : by_rank[static_cast<size_t>(r)]) mine.push_back(kept(a, 1, 3));
    before.restore(std::move(mine));
    const io::NamedTensors tensors = gather_unconsumed(before, world);
    // On rank 0 (which writes them): the rank count, then 4 tensors per answer.
    EXPECT_EQ(tensors.size(), r == 0 ? 1u + 4u * 3u : 0u);
    if (r == 0) {
      ASSERT_TRUE(write_unconsumed(dir.string(), tensors).ok());
    }
    world.sum(0.0);  // written before anyone reads

    RemoteSampler after(placement(&comm), r, nullptr, false);
    auto restored = restore_unconsumed(dir.string(), after, r, 2);
    ASSERT_TRUE(restored.ok()) << restored.status();
    EXPECT_EQ(*restored, static_cast<int64_t>(by_rank[static_cast<size_t>(r)].size()));
    // Taken in another order than asked; each matches its own request only.
    for (auto it = by_rank[static_cast<size_t>(r)].rbegin(); it != by_rank[static_cast<size_t>(r)].rend(); ++it) {
      const model::GenerationOutput got = after.generate(sampler_model, 1, 3, it->ids, it->mask, it->options);
      EXPECT_TRUE(at::equal(got.tokens, it->answer.tokens));
      EXPECT_TRUE(at::equal(got.logprobs, it->answer.logprobs));
      EXPECT_TRUE(at::equal(got.lengths, it->answer.lengths));
    }
    EXPECT_EQ(after.restored_taken(), *restored);
    EXPECT_EQ(after.weight_pushes(), 0);

    // Asking ahead (a message thread): each prefetch of a kept request claims it instead of sending
    // it or the weights, and generate() takes it.
    RemoteSampler ahead(placement(&comm), r, nullptr, /*ahead=*/true);
    ASSERT_TRUE(restore_unconsumed(dir.string(), ahead, r, 2).ok());
    for (const Asked& a : by_rank[static_cast<size_t>(r)]) {
      ahead.prefetch(sampler_model, 1, 3, a.ids, a.mask, a.options);
    }
    for (const Asked& a : by_rank[static_cast<size_t>(r)]) {
      EXPECT_TRUE(at::equal(ahead.generate(sampler_model, 1, 3, a.ids, a.mask, a.options).tokens, a.answer.tokens));
    }
    EXPECT_EQ(ahead.asked_ahead(), 0);
    EXPECT_EQ(ahead.weight_pushes(), 0);
    EXPECT_EQ(ahead.restored_taken(), static_cast<int64_t>(by_rank[static_cast<size_t>(r)].size()));

    // A run with another number of policy ranks takes none (its micro-batches differ).
    RemoteSampler elsewhere(placement(&comm), r, nullptr, false);
    auto none = restore_unconsumed(dir.string(), elsewhere, r, 3);
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(*none, 0);
  });
  // No file (a checkpoint with nothing in flight): nothing, no error.
  dist::run_thread_ranks(1, [&](dist::Communicator& comm) {
    RemoteSampler s(placement(&comm), 0, nullptr, false);
    auto none = restore_unconsumed((dir / "absent").string(), s, 0, 1);
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(*none, 0);
    // A damaged file is an error naming it, not a crash.
    const fs::path bad = dir / "bad";
    fs::create_directories(bad);
    std::ofstream(bad / kUnconsumedRolloutsFile) << "not safetensors";
    auto failed = restore_unconsumed(bad.string(), s, 0, 1);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find(kUnconsumedRolloutsFile), std::string::npos) << failed.status();
    // Well-formed, but tokens of another dtype: refused here, naming the entry, not mid-training.
    const Asked a = asked(0, 0);
    RemoteSampler::Answer k = kept(a, 1, 3);
    const io::NamedTensors wrong = {
        {"policy_ranks", at::tensor({int64_t{1}}, at::kLong)},
        {"rank0.0.request",
         at::from_blob(k.request.data(), {static_cast<int64_t>(k.request.size())}, at::kByte).clone()},
        {"rank0.0.tokens", a.answer.tokens.to(at::kFloat)},
        {"rank0.0.logprobs", a.answer.logprobs},
        {"rank0.0.lengths", a.answer.lengths}};
    ASSERT_TRUE(write_unconsumed(bad.string(), wrong).ok());
    failed = restore_unconsumed(bad.string(), s, 0, 1);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("rank0.0."), std::string::npos) << failed.status();
  });
  fs::remove_all(dir);
}

}  // namespace
}  // namespace aln::engine
