// The shared Buffer: seeded orders, the ranks' blocks of one step tile what one process would take,
// epochs wrap with a fresh order, and a saved position resumes the exact stream.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "core/buffer/buffer.h"

namespace aln::buffer {
namespace {

std::vector<Example> numbered(int n) {
  std::vector<Example> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)].prompt = {i};
  return out;
}

std::vector<int64_t> ids(const std::vector<const Example*>& batch) {
  std::vector<int64_t> out;
  for (const auto* e : batch) out.push_back(e->prompt[0]);
  return out;
}

TEST(Buffer, OrderIsSeededPermutation) {
  Buffer a(numbered(50), 7), b(numbered(50), 7), c(numbered(50), 8);
  EXPECT_EQ(a.order(0), b.order(0));
  EXPECT_NE(a.order(0), c.order(0));
  EXPECT_NE(a.order(0), a.order(1));
  auto o = a.order(3);
  EXPECT_EQ(std::set<int64_t>(o.begin(), o.end()).size(), 50u);
}

TEST(Buffer, RanksTileTheSingleProcessStream) {
  // 3 ranks x 2 examples per call == one process taking 6 per call (or 2 per call, 3 times).
  Buffer single(numbered(31), 5);
  std::vector<Buffer> ranks;
  for (int r = 0; r < 3; ++r) ranks.emplace_back(numbered(31), 5, r, 3);
  for (int step = 0; step < 12; ++step) {  // 72 examples: more than two epochs
    std::vector<int64_t> joined;
    for (auto& r : ranks) {
      auto part = ids(r.next(2));
      joined.insert(joined.end(), part.begin(), part.end());
    }
    if (step < 5) {  // within the first epoch the streams agree (30 of 31 examples)
      EXPECT_EQ(joined, ids(single.next(6))) << "step " << step;
    }
    EXPECT_EQ(ranks[0].position().offset, ranks[2].position().offset);
  }
  EXPECT_EQ(ranks[0].position().epoch, 2);
  EXPECT_EQ(ranks[0].position().offset, 12);
  EXPECT_EQ(ranks[0].shard_size(), 10);
}

TEST(Buffer, EveryExampleOncePerEpoch) {
  Buffer b(numbered(12), 1);
  std::set<int64_t> seen;
  for (int i = 0; i < 4; ++i) {
    for (int64_t id : ids(b.next(3))) seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 12u);
  EXPECT_EQ(b.position().epoch, 1);
  EXPECT_EQ(b.position().offset, 0);
}

TEST(Buffer, SeekResumesTheStream) {
  Buffer a(numbered(20), 3);
  for (int i = 0; i < 7; ++i) a.next(4);  // into the second epoch
  const Position saved = a.position();
  auto expected = ids(a.next(4));
  Buffer b(numbered(20), 3);
  b.seek(saved);
  EXPECT_EQ(ids(b.next(4)), expected);
  // The same global position on 2 ranks continues the same stream.
  Buffer r0(numbered(20), 3, 0, 2), r1(numbered(20), 3, 1, 2);
  r0.seek(saved);
  r1.seek(saved);
  auto joined = ids(r0.next(2));
  auto second = ids(r1.next(2));
  joined.insert(joined.end(), second.begin(), second.end());
  EXPECT_EQ(joined, expected);
}

TEST(Buffer, LengthGroupingSortsWithinWindows) {
  std::vector<int64_t> lengths;
  for (int i = 0; i < 40; ++i) lengths.push_back((i * 7) % 13);
  Buffer plain(numbered(40), 9), grouped(numbered(40), 9);
  grouped.group_by_length(lengths, 8);
  auto a = plain.order(0), b = grouped.order(0);
  for (size_t w = 0; w < 40; w += 8) {
    // Same examples per window as the plain shuffle, now longest first.
    std::multiset<int64_t> wa(a.begin() + w, a.begin() + w + 8), wb(b.begin() + w, b.begin() + w + 8);
    EXPECT_EQ(wa, wb);
    for (size_t k = w + 1; k < w + 8; ++k) EXPECT_GE(lengths[b[k - 1]], lengths[b[k]]);
  }
}

// What a device step needs from the host layout: the positions that score response tokens (else
// a nonzero() on the device, a host sync), the token count and the padding side.
TEST(Buffer, CollatedPairsCarryTheirScoredPositionsAndTokenCount) {
  Example a, b;
  a.prompt = {1, 2, 3};
  a.chosen = {4, 5};
  a.rejected = {6};
  b.prompt = {7};
  b.chosen = {8, 9, 10, 11};
  b.rejected = {12, 13};
  SequenceBatch batch = collate_pairs({&a, &b}, 0);
  const int64_t t = batch.input_ids.size(1);
  EXPECT_EQ(t, 5);
  EXPECT_TRUE(batch.right_padded);
  EXPECT_EQ(batch.tokens, batch.attention_mask.sum().item<int64_t>());
  EXPECT_EQ(batch.tokens, 5 + 5 + 4 + 3);
  const at::Tensor expected = (batch.response_mask.narrow(1, 1, t - 1).reshape(-1) > 0).nonzero().squeeze(1);
  EXPECT_TRUE(at::equal(batch.scored, expected));
  const SequenceBatch moved = batch.to(at::Device(at::kCPU));
  EXPECT_TRUE(at::equal(moved.scored, batch.scored));
  EXPECT_TRUE(moved.right_padded);
  EXPECT_EQ(moved.tokens, batch.tokens);
}

TEST(Buffer, TruncationKeepsTheChosenEnd) {
  std::vector<int64_t> p = {1, 2, 3, 4, 5}, r = {6, 7, 8};
  truncate(&p, 3, &r, 2);
  EXPECT_EQ(p, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(r, (std::vector<int64_t>{6, 7}));
  std::vector<int64_t> q = {1, 2, 3, 4, 5}, none;
  truncate(&q, 2, &none, 2, /*keep_prompt_start=*/true);
  EXPECT_EQ(q, (std::vector<int64_t>{1, 2}));
}

}  // namespace
}  // namespace aln::buffer
