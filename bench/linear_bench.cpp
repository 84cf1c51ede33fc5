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

}  // namespace

BENCHMARK_MAIN();
