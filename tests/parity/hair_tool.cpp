// Test helper for tests/parity/hair_parity.py: reads cases (sentence embeddings of samples and
// demonstrations, rewards, reward gaps, group size, tau) as JSON on stdin and prints Aln's HAIR
// quantities (W per sample, alpha^D, alpha^M, kept mask, scaled advantages) as JSON, float64.
#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kernels/hair.h"
#include "tests/parity/tool_json.h"

using aln::parity::flat;
using aln::parity::matrix;
using nlohmann::json;

int main() {
  try {
    const json cases = json::parse(std::cin);
    json out = json::array();
    for (const json& c : cases) {
      const int64_t g = c["group_size"], h = c["hidden"];
      std::vector<double> w;
      for (size_t r = 0; r < c["outputs"].size(); ++r) {
        w.push_back(
            aln::kernels::hair_similarity(matrix(c["outputs"][r], h), matrix(c["demos"][r / g], h)).item<double>());
      }
      const at::Tensor delta = 1 - at::tensor(w, at::kDouble);
      const at::Tensor alpha_d = aln::kernels::hair_data_alpha(delta, g);
      const auto resp =
          aln::kernels::hair_model_alpha(at::tensor(c["gaps"].get<std::vector<double>>(), at::kDouble), g, c["tau"]);
      const at::Tensor adv = aln::kernels::hair_advantages(
          at::tensor(c["rewards"].get<std::vector<double>>(), at::kDouble), alpha_d, resp.alpha, g);
      out.push_back({{"W", w},
                     {"alpha_d", flat(alpha_d)},
                     {"alpha_m", flat(resp.alpha)},
                     {"kept", flat(resp.kept)},
                     {"advantages", flat(adv)}});
    }
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hair_tool: %s\n", e.what());
    return 1;
  }
}
