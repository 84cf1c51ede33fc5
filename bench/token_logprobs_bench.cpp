// Token log-probs on the CPU: the LibTorch composite Aln uses (gather - logsumexp) vs the textbook
// log_softmax + gather that materialises [rows, vocab]; and the output projection + log-probs,
// forward and backward, as training runs it (full [rows, vocab] logits, then the composite) against
// the fused chunked kernel (kernels/fused_logprobs.h), which never holds more than a chunk of
// logits (the counter `largest_logits_bytes`). Run with
//   build/bin/bench_token_logprobs --benchmark_format=json --benchmark_out=token_logprobs.json
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <algorithm>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/fused_logprobs.h"
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

// Forward and backward of log p(target | h W^T) for rows x hidden states and a vocab x hidden
// projection, weighted per token (as a DPO loss weights them). kFull: the logits, then log-softmax
// and gather; kFused: the fused kernel's tiles, recomputed in backward; kKept: the fused kernel with
// all the logits in one tile kept for backward (what training runs on the CPU up to 128 MiB of logits).
enum class Projection { kFull, kFused, kKept };
void projection_step(benchmark::State& state, Projection how) {
  const bool fused = how != Projection::kFull;
  const int64_t rows = state.range(0), hidden = state.range(1), vocab = state.range(2);
  at::set_num_threads(static_cast<int>(state.range(3)));
  at::manual_seed(1);
  at::Tensor h = at::randn({rows, hidden}).requires_grad_(true);
  at::Tensor w = (at::randn({vocab, hidden}) * 0.05).requires_grad_(true);
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  at::Tensor upstream = at::randn({rows});
  for (auto _ : state) {
    at::Tensor lp =
        fused ? aln::kernels::fused_token_logprobs(h, w, targets, 1.0, state.range(4), how == Projection::kKept)
              : aln::kernels::token_logprobs(at::mm(h, w.t()), targets);
    (lp * upstream).sum().backward();
    h.mutable_grad() = at::Tensor();
    w.mutable_grad() = at::Tensor();
  }
  const int64_t tile = state.range(4) > 0 ? state.range(4) : aln::kernels::fused_logprobs_tile(rows);
  const int64_t columns = how == Projection::kFused ? std::min(vocab, tile) : vocab;
  state.counters["largest_logits_bytes"] = static_cast<double>(rows * columns * 4);
  // Forward h W^T and both backward products (the tiled kernel recomputes the first: one more).
  state.counters["model_flops"] = benchmark::Counter(static_cast<double>(6 * rows * hidden * vocab) * state.iterations(),
                                                     benchmark::Counter::kIsRate);
}

void BM_ProjectionLogprobsFull(benchmark::State& state) { projection_step(state, Projection::kFull); }
void BM_ProjectionLogprobsFused(benchmark::State& state) { projection_step(state, Projection::kFused); }
void BM_ProjectionLogprobsKept(benchmark::State& state) { projection_step(state, Projection::kKept); }

// rows, hidden, vocab, threads, vocabulary columns per tile (0: the kernel's default, about 8 MiB of
// logits; the others try smaller tiles). Run with MALLOC_MMAP_THRESHOLD_=MALLOC_TRIM_THRESHOLD_=1073741824 for the
// allocator setting `aln` applies to itself (without it the full path page-faults its logits every iteration).
void projection_shapes(benchmark::internal::Benchmark* b, bool tiles) {
  for (const auto& [rows, hidden] : std::vector<std::pair<int64_t, int64_t>>{
           {512, 64}, {512, 128}, {512, 256}, {512, 512}, {1024, 512}, {2048, 64}, {2048, 512}}) {
    b->Args({rows, hidden, 50257, 2, 0});
    if (tiles && rows == 512 && (hidden == 64 || hidden == 512)) {
      for (const int64_t tile : {512, 1024, 2048}) b->Args({rows, hidden, 50257, 2, tile});
    }
  }
  b->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_ProjectionLogprobsFull)->Apply([](benchmark::internal::Benchmark* b) { projection_shapes(b, false); });
BENCHMARK(BM_ProjectionLogprobsFused)->Apply([](benchmark::internal::Benchmark* b) { projection_shapes(b, true); });
BENCHMARK(BM_ProjectionLogprobsKept)->Apply([](benchmark::internal::Benchmark* b) { projection_shapes(b, false); });

}  // namespace

BENCHMARK_MAIN();
