// All-reduce, reduce-scatter and all-gather bandwidth of the MPI backend vs memcpy bandwidth on the
// same machine, as JSON (rank 0):
//   mpirun -np 2 build/bin/allreduce_bench [--max-mb 64] > allreduce.json
// For each size (float32, 4 KiB .. max, the whole buffer): the median over repeats of one collective
// (started and waited through the Communicator, as training does), algorithm bandwidth = bytes /
// time and bus bandwidth in the nccl-tests convention (what each link carries in a ring: 2 (n - 1) / n
// of the buffer for all-reduce, (n - 1) / n for reduce-scatter and all-gather), next to memcpy
// bandwidth (one at::Tensor copy_ of the same size). Correctness is checked first: every rank
// contributes rank + 1, so each summed element must be n (n + 1) / 2.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "distributed/mpi_backend.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t max_mb = 64;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--max-mb") max_mb = std::atoll(argv[i + 1]);
  }
  auto runtime = aln::dist::MpiRuntime::init(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "allreduce_bench: %s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  auto comm = (*runtime)->world();
  const int n = comm->size(), rank = comm->rank();
  const auto timeout = std::chrono::seconds(120);
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t bytes = 4096; bytes <= max_mb * (1 << 20); bytes *= 4) {
    const int64_t count = bytes / 4 / n * n;  // a whole block per rank for reduce-scatter / all-gather
    const int64_t block = count / n;
    at::Tensor t = at::full({count}, static_cast<float>(rank + 1));
    at::Tensor shard = at::empty({block});
    auto check = comm->all_reduce_sum(t)->wait(timeout);
    const float want = n * (n + 1) / 2.0f;
    if (!check.ok() || t[0].item<float>() != want || t[count - 1].item<float>() != want) {
      std::fprintf(stderr, "allreduce_bench: wrong all-reduce sum at %lld bytes\n", static_cast<long long>(bytes));
      return 1;
    }
    t.fill_(static_cast<float>(rank + 1));
    check = comm->reduce_scatter_sum(t, shard)->wait(timeout);
    if (!check.ok() || shard[0].item<float>() != want || shard[block - 1].item<float>() != want) {
      std::fprintf(stderr, "allreduce_bench: wrong reduce-scatter sum at %lld bytes\n", static_cast<long long>(bytes));
      return 1;
    }
    shard.fill_(static_cast<float>(rank));
    check = comm->all_gather(shard, t)->wait(timeout);
    if (!check.ok() || t[0].item<float>() != 0.0f || t[count - 1].item<float>() != static_cast<float>(n - 1)) {
      std::fprintf(stderr, "allreduce_bench: wrong all-gather at %lld bytes\n", static_cast<long long>(bytes));
      return 1;
    }
    const int repeats = bytes <= (1 << 20) ? 50 : 10;
    std::vector<double> reduce_s, scatter_s, gather_s, copy_s;
    at::Tensor src = at::rand({count}), dst = at::empty({count});
    auto timed = [&](std::vector<double>& into, auto&& op) {
      (void)comm->barrier()->wait(timeout);
      const auto t0 = std::chrono::steady_clock::now();
      (void)op()->wait(timeout);
      into.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    };
    for (int r = 0; r < repeats; ++r) {
      timed(reduce_s, [&] { return comm->all_reduce_sum(t); });
      timed(scatter_s, [&] { return comm->reduce_scatter_sum(t, shard); });
      timed(gather_s, [&] { return comm->all_gather(shard, t); });
      const auto t0 = std::chrono::steady_clock::now();
      dst.copy_(src);
      copy_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double full = static_cast<double>(count) * 4;
    // Bus bandwidth as nccl-tests defines it: all-reduce moves 2 (n - 1) / n of the buffer per rank,
    // reduce-scatter and all-gather (n - 1) / n of the whole (unsharded) buffer.
    const double reduce_t = median(reduce_s), scatter_t = median(scatter_s), gather_t = median(gather_s);
    rows.push_back({{"bytes", static_cast<int64_t>(full)},
                    {"allreduce_s", reduce_t},
                    {"algbw_gbps", full / reduce_t / 1e9},
                    {"busbw_gbps", full / reduce_t / 1e9 * 2.0 * (n - 1) / n},
                    {"reduce_scatter_s", scatter_t},
                    {"reduce_scatter_busbw_gbps", full / scatter_t / 1e9 * (n - 1) / n},
                    {"all_gather_s", gather_t},
                    {"all_gather_busbw_gbps", full / gather_t / 1e9 * (n - 1) / n},
                    {"memcpy_gbps", full / median(copy_s) / 1e9}});
  }
  if (rank == 0) {
    nlohmann::json out = {{"backend", comm->backend_name()}, {"ranks", n}, {"dtype", "float32"}, {"sizes", rows}};
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}
