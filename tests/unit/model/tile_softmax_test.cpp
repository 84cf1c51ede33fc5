// The row sweeps of the fused log-prob kernel (core/model/tile_softmax.*) against float64: the
// polynomial exp over the whole float range and at its edges, a tile's online log-sum-exp and picked
// logit, and the in-place softmax gradient, on odd sizes (tails of every length), strided rows, targets
// inside and outside the tile, with and without a temperature; results independent of the thread count.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/model/gemm_avx512.h"
#include "core/model/tile_softmax.h"

namespace aln::model {
namespace {

#define SKIP_WITHOUT_KERNELS()                                                                  \
  if (!gemm_avx512_available()) {                                                               \
    float x = 0, y = 0;                                                                         \
    EXPECT_THROW(exp_floats(&x, 1, &y), Error);                                                 \
    GTEST_SKIP() << "no AVX-512 kernels here (or ALN_CPU_KERNELS=generic): the ATen path runs"; \
  }

TEST(TileSoftmax, ExpWithinTwoUlpOverTheFloatRange) {
  SKIP_WITHOUT_KERNELS();
  std::vector<float> x;
  for (double v = -103.0; v <= 88.7; v += 1.0 / 1024) x.push_back(static_cast<float>(v));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 0.34657359f, -0.34657359f, 88.72f, -87.33f}) x.push_back(v);
  std::vector<float> y(x.size());
  exp_floats(x.data(), static_cast<int64_t>(x.size()), y.data());
  double worst_ulps = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    // One ulp of the exact value; below the normal range the spacing stays that of the denormals.
    const double ulp = std::max(std::ldexp(1.0, std::ilogb(want) - 23), std::ldexp(1.0, -149));
    worst_ulps = std::max(worst_ulps, std::abs(static_cast<double>(y[i]) - want) / ulp);
  }
  EXPECT_LE(worst_ulps, 1.5);  // 1.22 measured
  RecordProperty("worst_ulps", std::to_string(worst_ulps));
}

TEST(TileSoftmax, ExpEdges) {
  SKIP_WITHOUT_KERNELS();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-inf, inf, std::nanf(""), -200.0f, -110.0f, 100.0f, 89.0f, 0.0f};
  std::vector<float> y(x.size());
  exp_floats(x.data(), static_cast<int64_t>(x.size()), y.data());
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], inf);
  EXPECT_TRUE(std::isnan(y[2]));
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[4], 0.0f);
  EXPECT_EQ(y[5], inf);
  EXPECT_EQ(y[6], inf);
  EXPECT_EQ(y[7], 1.0f);
}

struct Tile {
  at::Tensor logits;  // [n, ld] float32; the tile is its first `size` columns
  at::Tensor targets;
};

// Rows of `size` logits with a row stride larger than the row (a view into wider rows), targets in
// [0, vocab) so some fall in the tile [start, start + size) and some do not.
Tile make_tile(int64_t n, int64_t size, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  Tile t;
  t.logits = (at::randn({n, size + 7}) * 4).narrow(1, 0, size);
  t.targets = at::randint(vocab, {n}, at::kLong);
  return t;
}

TEST(TileSoftmax, OnlineLogSumExpOverTwoTilesMatchesFloat64) {
  SKIP_WITHOUT_KERNELS();
  const int64_t n = 37, first = 100, second = 61, vocab = first + second;
  for (float temperature : {1.0f, 0.7f}) {
    at::manual_seed(4);
    const at::Tensor logits = at::randn({n, vocab}) * 4;
    const at::Tensor targets = at::randint(vocab, {n}, at::kLong);
    at::Tensor running_max = at::full({n}, -std::numeric_limits<float>::infinity());
    at::Tensor running_sum = at::zeros({n}), picked = at::zeros({n});
    for (auto [start, size] : {std::pair<int64_t, int64_t>{0, first}, {first, second}}) {
      const at::Tensor tile = logits.narrow(1, start, size);  // row stride `vocab`
      tile_logsumexp(tile.const_data_ptr<float>(), n, size, tile.stride(0), temperature,
                     targets.const_data_ptr<int64_t>(), start, running_max.mutable_data_ptr<float>(),
                     running_sum.mutable_data_ptr<float>(), picked.mutable_data_ptr<float>());
    }
    const at::Tensor exact = logits.to(at::kDouble) / temperature;
    const at::Tensor want_lse = exact.logsumexp(1);
    const at::Tensor want_picked = exact.gather(1, targets.unsqueeze(1)).squeeze(1);
    const at::Tensor got_lse = running_max.to(at::kDouble) + running_sum.to(at::kDouble).log();
    EXPECT_LE((got_lse - want_lse).abs().max().item<double>(), 1e-6 * want_lse.abs().max().item<double>())
        << "temperature " << temperature;
    EXPECT_LE((picked.to(at::kDouble) - want_picked).abs().max().item<double>(), 1e-6 * 4 / temperature);
  }
}

TEST(TileSoftmax, GradientInPlaceMatchesFloat64) {
  SKIP_WITHOUT_KERNELS();
  const int64_t n = 29, size = 83, start = 40, vocab = 200;
  for (float temperature : {1.0f, 0.7f}) {
    Tile t = make_tile(n, size, vocab, 8);
    t.targets.narrow(0, 0, 5).copy_(at::arange(start, start + 5, at::kLong));  // some surely inside
    const at::Tensor lse = at::randn({n}) + 6;
    const at::Tensor grad = at::randn({n});
    const at::Tensor x = t.logits.to(at::kDouble) / temperature;
    at::Tensor want = (x - lse.to(at::kDouble).unsqueeze(1)).exp() * -grad.to(at::kDouble).unsqueeze(1);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t col = t.targets[i].item<int64_t>() - start;
      if (col >= 0 && col < size) want[i][col] += grad[i].item<double>();
    }
    want = want / temperature;
    at::Tensor got = t.logits.clone();  // contiguous [n, size]
    at::Tensor strided = t.logits;      // the same values in place in rows of stride size + 7
    for (at::Tensor* g : {&got, &strided}) {
      tile_softmax_grad(g->mutable_data_ptr<float>(), n, size, g->stride(0), temperature,
                        t.targets.const_data_ptr<int64_t>(), start, lse.const_data_ptr<float>(),
                        grad.const_data_ptr<float>());
      const double scale = want.abs().max().item<double>();
      EXPECT_LE((g->to(at::kDouble) - want).abs().max().item<double>(), 1e-6 * scale) << "temperature " << temperature;
    }
    EXPECT_TRUE(at::equal(got, strided));
  }
}

// Rows of every length from 1 to 48 (a tail of each length after 0, 1 and 2 full vectors) and a few
// longer: the log-sum-exp and the gradient against float64, and the 7 columns past each strided row
// (the rest of a wider row) read by neither sweep and left as they were by the gradient's.
TEST(TileSoftmax, EveryTailLengthAndTheRestOfTheRowUntouched) {
  SKIP_WITHOUT_KERNELS();
  const int64_t n = 5;
  std::vector<int64_t> sizes;
  for (int64_t size = 1; size <= 48; ++size) sizes.push_back(size);
  for (int64_t size : {63, 64, 65, 129}) sizes.push_back(size);
  for (int64_t size : sizes) {
    at::manual_seed(static_cast<uint64_t>(size));
    at::Tensor wide = at::randn({n, size + 7}) * 4;
    wide.narrow(1, size, 7).fill_(1e30f);  // would dominate any sum that read it
    const at::Tensor before = wide.clone();
    const at::Tensor tile = wide.narrow(1, 0, size);
    const at::Tensor targets = at::randint(size, {n}, at::kLong);
    const float temperature = size % 2 == 0 ? 1.0f : 0.7f;
    at::Tensor running_max = at::full({n}, -std::numeric_limits<float>::infinity());
    at::Tensor running_sum = at::zeros({n}), picked = at::zeros({n});
    tile_logsumexp(tile.const_data_ptr<float>(), n, size, tile.stride(0), temperature,
                   targets.const_data_ptr<int64_t>(), 0, running_max.mutable_data_ptr<float>(),
                   running_sum.mutable_data_ptr<float>(), picked.mutable_data_ptr<float>());
    const at::Tensor x = tile.to(at::kDouble) / temperature;
    const at::Tensor want_lse = x.logsumexp(1);
    const at::Tensor got_lse = running_max.to(at::kDouble) + running_sum.to(at::kDouble).log();
    EXPECT_LE((got_lse - want_lse).abs().max().item<double>(), 1e-6 * want_lse.abs().max().item<double>())
        << "size " << size;
    EXPECT_TRUE(at::allclose(picked.to(at::kDouble), x.gather(1, targets.unsqueeze(1)).squeeze(1), 1e-6, 1e-6))
        << "size " << size;
    const at::Tensor lse = want_lse.to(at::kFloat), grad = at::randn({n});
    const at::Tensor onehot = at::zeros({n, size}, at::kDouble).scatter_(1, targets.unsqueeze(1), 1.0);
    const at::Tensor g64 = grad.to(at::kDouble).unsqueeze(1);
    const at::Tensor want = ((x - lse.to(at::kDouble).unsqueeze(1)).exp() * -g64 + g64 * onehot) / temperature;
    tile_softmax_grad(wide.mutable_data_ptr<float>(), n, size, wide.stride(0), temperature,
                      targets.const_data_ptr<int64_t>(), 0, lse.const_data_ptr<float>(), grad.const_data_ptr<float>());
    EXPECT_LE((wide.narrow(1, 0, size).to(at::kDouble) - want).abs().max().item<double>(),
              1e-6 * (want.abs().max().item<double>() + 1))
        << "size " << size;
    EXPECT_TRUE(at::equal(wide.narrow(1, size, 7), before.narrow(1, size, 7))) << "size " << size;
  }
}

TEST(TileSoftmax, ResultsDoNotDependOnTheThreadCount) {
  SKIP_WITHOUT_KERNELS();
  const int64_t n = 300, size = 517;
  const Tile t = make_tile(n, size, 2 * size, 11);
  const at::Tensor lse = at::randn({n}) + 8, grad = at::randn({n});
  std::vector<at::Tensor> sums, grads;
  const int threads = at::get_num_threads();
  for (int count : {1, 2}) {
    at::set_num_threads(count);
    at::Tensor running_max = at::zeros({n}), running_sum = at::ones({n}), picked = at::zeros({n});
    tile_logsumexp(t.logits.const_data_ptr<float>(), n, size, t.logits.stride(0), 0.7f,
                   t.targets.const_data_ptr<int64_t>(), 0, running_max.mutable_data_ptr<float>(),
                   running_sum.mutable_data_ptr<float>(), picked.mutable_data_ptr<float>());
    sums.push_back(at::cat({running_max, running_sum, picked}));
    at::Tensor g = t.logits.clone();
    tile_softmax_grad(g.mutable_data_ptr<float>(), n, size, size, 0.7f, t.targets.const_data_ptr<int64_t>(), 0,
                      lse.const_data_ptr<float>(), grad.const_data_ptr<float>());
    grads.push_back(g);
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(sums[0], sums[1]));
  EXPECT_TRUE(at::equal(grads[0], grads[1]));
}

}  // namespace
}  // namespace aln::model
