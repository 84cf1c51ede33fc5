// All-reduce bandwidth of the MPI backend vs memcpy bandwidth on the same machine, as JSON (rank 0):
//   mpirun -np 2 build/bin/allreduce_bench [--max-mb 64] > allreduce.json
// For each size (float32, 4 KiB .. max): the median over repeats of one all_reduce_sum (started and
// waited through the Communicator, as training does), algorithm bandwidth = bytes / time and bus
// bandwidth = algbw x 2 (n - 1) / n (the nccl-tests convention: what each link carries in a ring),
// next to memcpy bandwidth (one at::Tensor copy_ of the same size). Correctness is checked first:
// every rank contributes rank + 1, so each element must be n (n + 1) / 2.
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
    const int64_t count = bytes / 4;
    at::Tensor t = at::full({count}, static_cast<float>(rank + 1));
    auto check = comm->all_reduce_sum(t)->wait(timeout);
    if (!check.ok() || t[0].item<float>() != n * (n + 1) / 2.0f || t[count - 1].item<float>() != n * (n + 1) / 2.0f) {
      std::fprintf(stderr, "allreduce_bench: wrong sum at %lld bytes\n", static_cast<long long>(bytes));
      return 1;
    }
    const int repeats = bytes <= (1 << 20) ? 50 : 10;
    std::vector<double> reduce_s, copy_s;
    at::Tensor src = at::rand({count}), dst = at::empty({count});
    for (int r = 0; r < repeats; ++r) {
      (void)comm->barrier()->wait(timeout);
      auto t0 = std::chrono::steady_clock::now();
      (void)comm->all_reduce_sum(t)->wait(timeout);
      reduce_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      t0 = std::chrono::steady_clock::now();
      dst.copy_(src);
      copy_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double time = median(reduce_s), algbw = bytes / time / 1e9;
    rows.push_back({{"bytes", bytes},
                    {"allreduce_s", time},
                    {"algbw_gbps", algbw},
                    {"busbw_gbps", algbw * 2.0 * (n - 1) / n},
                    {"memcpy_gbps", bytes / median(copy_s) / 1e9}});
  }
  if (rank == 0) {
    nlohmann::json out = {{"backend", comm->backend_name()}, {"ranks", n}, {"dtype", "float32"}, {"sizes", rows}};
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}
