// Test helper for tests/parity/token_level_parity.py: reads one case from a directory (meta.json
// and raw little-endian float64/int64 arrays), runs Aln's chunked TDPO / Ra-DPO kernels in float64
// and writes out.json (loss, divergence sums) and grad.bin (gradient wrt the policy logits).
#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/token_level.h"

namespace {

template <typename T>
at::Tensor read_array(const std::string& path, std::vector<int64_t> shape, at::ScalarType type) {
  std::ifstream in(path, std::ios::binary);
  int64_t count = 1;
  for (int64_t s : shape) count *= s;
  std::vector<T> data(static_cast<size_t>(count));
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(count * sizeof(T)));
  if (!in) throw std::runtime_error(path + ": short read");
  return at::from_blob(data.data(), shape, type).clone();
}

std::vector<double> to_vec(const at::Tensor& t) {
  at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: token_level_tool CASE_DIR\n");
    return 2;
  }
  try {
    const std::string dir = argv[1];
    std::ifstream meta_in(dir + "/meta.json");
    const nlohmann::json meta = nlohmann::json::parse(meta_in);
    const int64_t n = meta["positions"], v = meta["vocab"], pairs = meta["pairs"];
    const at::Tensor z = read_array<double>(dir + "/policy.bin", {n, v}, at::kDouble);
    const at::Tensor r = read_array<double>(dir + "/reference.bin", {n, v}, at::kDouble);
    const at::Tensor y = read_array<int64_t>(dir + "/targets.bin", {n}, at::kLong);
    const at::Tensor seq = read_array<int64_t>(dir + "/sequence.bin", {n}, at::kLong);
    aln::kernels::DivergenceOptions options;
    const std::string kind = meta["kind"];
    options.kind = kind == "kl"     ? aln::kernels::TokenDivergence::kSequenceKl
                   : kind == "cvar" ? aln::kernels::TokenDivergence::kCvar
                                    : aln::kernels::TokenDivergence::kEntropic;
    options.mu = meta["mu"];
    options.split_vocabulary = meta["split"];
    const auto variant = meta["variant"] == 1 ? aln::kernels::PairVariant::kOne : aln::kernels::PairVariant::kTwo;
    auto result = aln::kernels::token_level_pair_loss(z, r, y, seq, pairs, options, variant, meta["beta"],
                                                      meta["alpha"], meta["chunk"]);
    nlohmann::json out = {{"loss", result.loss.loss.item<double>()},
                          {"divergence_chosen", to_vec(result.divergence_chosen)},
                          {"divergence_rejected", to_vec(result.divergence_rejected)}};
    std::ofstream(dir + "/out.json") << out.dump();
    at::Tensor g = result.policy_logits_grad.contiguous();
    std::ofstream(dir + "/grad.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(g.data_ptr<double>()), static_cast<std::streamsize>(g.numel() * 8));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "token_level_tool: %s\n", e.what());
    return 1;
  }
}
