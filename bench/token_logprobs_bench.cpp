// Token log-probs on the CPU: the LibTorch composite Aln uses (gather - logsumexp) vs the textbook
// log_softmax + gather that materialises [rows, vocab]. Run with
//   build/bin/bench_token_logprobs --benchmark_format=json --benchmark_out=token_logprobs.json
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include "core/error.h"
#include "kernels/token_logprobs.h"

namespace {

void check_equal(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor a = aln::kernels::token_logprobs(logits, targets);
  at::Tensor b = at::log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1);
  ALN_CHECK(at::allclose(a, b, 1e-5, 1e-5), "benchmark inputs disagree before timing");
}

void BM_AlnComposite(benchmark::State& state) {
  at::set_num_threads(1);
  const int64_t rows = state.range(0), vocab = state.range(1);
  at::Tensor logits = at::randn({rows, vocab});
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  check_equal(logits, targets);
  for (auto _ : state) benchmark::DoNotOptimize(aln::kernels::token_logprobs(logits, targets));
  state.SetBytesProcessed(state.iterations() * rows * vocab * 4);
}

void BM_LogSoftmaxGather(benchmark::State& state) {
  at::set_num_threads(1);
  const int64_t rows = state.range(0), vocab = state.range(1);
  at::Tensor logits = at::randn({rows, vocab});
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  for (auto _ : state) {
    benchmark::DoNotOptimize(at::log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1));
  }
  state.SetBytesProcessed(state.iterations() * rows * vocab * 4);
}

BENCHMARK(BM_AlnComposite)->Args({64, 50257})->Args({512, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LogSoftmaxGather)->Args({64, 50257})->Args({512, 4096})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
