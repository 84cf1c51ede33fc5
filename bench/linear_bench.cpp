// Float32 linear layers of a forward pass without autograd: Aln's AVX-512 kernel
// (core/model/gemm_avx512.*) vs at::linear (LibTorch's BLAS), on the shapes of the tiny Llama in
// bench/model_vs_transformers.py (8 x 256 tokens, hidden 256, MLP 688, vocab 32000). Each case
// checks the kernel against at::linear before timing. Run with
//   build/bin/bench_linear --benchmark_format=json --benchmark_out=linear.json
// Both write into a fresh output per call, as a model forward does. GFLOP/s is the "FLOPS" counter.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include "core/error.h"
#include "core/model/fast_linear.h"
#include "core/model/gemm_avx512.h"

namespace {

struct Operands {
  at::Tensor x, w;
};

Operands operands(const benchmark::State& state) {
  at::manual_seed(0);
  return {at::randn({state.range(0), state.range(1)}), at::randn({state.range(2), state.range(1)})};
}

at::Tensor aln_linear(const Operands& o) {
  at::Tensor y = at::empty({o.x.size(0), o.w.size(0)});
  aln::model::gemm_nt_avx512(o.x.const_data_ptr<float>(), o.x.size(0), o.x.size(1), o.w.const_data_ptr<float>(),
                             o.w.size(0), nullptr, y.mutable_data_ptr<float>());
  return y;
}

void count(benchmark::State& state) {
  state.counters["FLOPS"] = benchmark::Counter(
      2.0 * static_cast<double>(state.range(0) * state.range(1) * state.range(2)) * state.iterations(),
      benchmark::Counter::kIsRate);
}

void BM_Aln(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(3)));
  if (!aln::model::gemm_avx512_available()) {
    state.SkipWithError("no AVX-512 on this CPU");
    return;
  }
  const Operands o = operands(state);
  ALN_CHECK(at::allclose(aln_linear(o), at::linear(o.x, o.w), 1e-4, 1e-3), "kernel disagrees with at::linear");
  for (auto _ : state) benchmark::DoNotOptimize(aln_linear(o));
  count(state);
}

void BM_AlnReused(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(3)));
  const Operands o = operands(state);
  at::Tensor y = at::empty({o.x.size(0), o.w.size(0)});
  for (auto _ : state) {
    aln::model::gemm_nt_avx512(o.x.const_data_ptr<float>(), o.x.size(0), o.x.size(1), o.w.const_data_ptr<float>(),
                               o.w.size(0), nullptr, y.mutable_data_ptr<float>());
    benchmark::DoNotOptimize(y);
  }
  count(state);
}

void BM_AtLinear(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(3)));
  const Operands o = operands(state);
  for (auto _ : state) benchmark::DoNotOptimize(at::linear(o.x, o.w));
  count(state);
}

// {rows, k, n, threads}
#define ALN_LINEAR_SHAPES(B)                                                                          \
  BENCHMARK(B)                                                                                        \
      ->Args({2048, 256, 32000, 1})                                                                   \
      ->Args({2048, 256, 32000, 2})                                                                   \
      ->Args({2048, 256, 688, 1})                                                                     \
      ->Args({2048, 256, 688, 2})                                                                     \
      ->Args({2048, 688, 256, 2})                                                                     \
      ->Args({2048, 256, 256, 2})                                                                     \
      ->Args({2048, 256, 128, 2})                                                                     \
      ->Unit(benchmark::kMillisecond)
ALN_LINEAR_SHAPES(BM_Aln);
ALN_LINEAR_SHAPES(BM_AtLinear);
ALN_LINEAR_SHAPES(BM_AlnReused);

// Training's three products of a layer y = x W^T, x [m, k], W [n, k] (core/model/fast_linear.h):
// the GEMM with the operands' strides as TrainableLinear passes them, against what at::linear's
// autograd runs (addmm with W^T; mm(dy, W); mm(dy^T, x)). gemm_wins is set from these numbers.
// Args: {product (0 forward, 1 dx, 2 dW), m, k, n, threads}.
struct Training {
  aln::model::LinearProduct product;
  int64_t m, k, n;
  at::Tensor x, w, gy;
};

Training training(const benchmark::State& state) {
  at::manual_seed(0);
  Training t{static_cast<aln::model::LinearProduct>(state.range(0)),
             state.range(1),
             state.range(2),
             state.range(3),
             {},
             {},
             {}};
  t.x = at::randn({t.m, t.k});
  t.w = at::randn({t.n, t.k});
  t.gy = at::randn({t.m, t.n});
  return t;
}

at::Tensor blas_product(const Training& t) {
  switch (t.product) {
    case aln::model::LinearProduct::kForward:
      return at::linear(t.x, t.w);
    case aln::model::LinearProduct::kGradInput:
      return at::mm(t.gy, t.w);
    case aln::model::LinearProduct::kGradWeight:
      return at::mm(t.gy.t(), t.x);
  }
  return {};
}

at::Tensor aln_product(const Training& t) {
  using aln::model::MatrixView;
  const float* x = t.x.const_data_ptr<float>();
  const float* w = t.w.const_data_ptr<float>();
  const float* gy = t.gy.const_data_ptr<float>();
  switch (t.product) {
    case aln::model::LinearProduct::kForward: {
      at::Tensor y = at::empty({t.m, t.n});
      aln::model::gemm_avx512({x, t.k, 1}, {w, 1, t.k}, t.m, t.k, t.n, y.mutable_data_ptr<float>(), t.n);
      return y;
    }
    case aln::model::LinearProduct::kGradInput: {
      at::Tensor dx = at::empty({t.m, t.k});
      aln::model::gemm_avx512({gy, t.n, 1}, {w, t.k, 1}, t.m, t.n, t.k, dx.mutable_data_ptr<float>(), t.k);
      return dx;
    }
    case aln::model::LinearProduct::kGradWeight: {
      at::Tensor dw = at::empty({t.n, t.k});
      aln::model::gemm_avx512({gy, 1, t.n}, {x, t.k, 1}, t.n, t.m, t.k, dw.mutable_data_ptr<float>(), t.k);
      return dw;
    }
  }
  return {};
}

// Args {product, m, k, n, threads, implementation (0 the GEMM, 1 the BLAS)}; the two run one
// after the other for each shape, so both see the same load on a shared machine.
void BM_Train(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(4)));
  const bool gemm = state.range(5) == 0;
  if (gemm && !aln::model::gemm_avx512_available()) {
    state.SkipWithError("no AVX-512 on this CPU");
    return;
  }
  const Training t = training(state);
  if (gemm) ALN_CHECK(at::allclose(aln_product(t), blas_product(t), 1e-4, 1e-2), "GEMM disagrees with the BLAS");
  for (auto _ : state) benchmark::DoNotOptimize(gemm ? aln_product(t) : blas_product(t));
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * static_cast<double>(t.m * t.k * t.n) * state.iterations(), benchmark::Counter::kIsRate);
}

// The layers of bench/dpo_step.py's Llama at hidden 64 and 512 (4 heads, 2 kv heads, MLP 11/4 of
// the hidden size) and of the tiny Llama above (hidden 256), and one vocabulary tile of the fused
// log-prob kernel (kernels/fused_logprobs.cpp: 4,096 rows of the output projection at 512 tokens),
// at 512 and 2,048 tokens; and, at 512 tokens, the whole GPT-2-vocabulary projection at hidden 512,
// which that kernel runs as one tile where it keeps the logits.
void training_shapes(benchmark::internal::Benchmark* b) {
  const std::vector<std::pair<int64_t, int64_t>> layers = {{64, 64},    {64, 32},    {64, 176},  {176, 64},  {256, 256},
                                                           {256, 128},  {256, 688},  {688, 256}, {512, 512}, {512, 256},
                                                           {512, 1408}, {1408, 512}, {64, 4096}, {512, 4096}};
  for (int64_t product = 0; product < 3; ++product) {
    for (const int64_t m : {512, 2048}) {
      for (const auto& [k, n] : layers) {
        for (int64_t impl = 0; impl < 2; ++impl) b->Args({product, m, k, n, 2, impl});
      }
    }
    for (int64_t impl = 0; impl < 2; ++impl) b->Args({product, 512, 512, 50257, 2, impl});
  }
  b->Unit(benchmark::kMicrosecond)->MinTime(0.2);
}
BENCHMARK(BM_Train)->Apply(training_shapes);

}  // namespace

BENCHMARK_MAIN();
