// Test helper for tests/parity/grpo_parity.py: reads cases (per-token log-probs, old and reference
// log-probs, advantages, masks, settings) as JSON on stdin, computes Aln's GRPO loss in float64 and
// its gradient with respect to the per-token policy log-probs, and prints them as JSON; also
// Aln's group advantages for given rewards.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kernels/grpo_loss.h"
#include "tests/parity/tool_json.h"

using aln::parity::flat;
using aln::parity::matrix;
using nlohmann::json;

int main() {
  try {
    const json cases = json::parse(std::cin);
    json out = json::array();
    for (const json& c : cases) {
      if (c.contains("rewards")) {
        at::Tensor r = at::tensor(c["rewards"].get<std::vector<double>>(), at::kDouble);
        out.push_back({{"advantages", flat(aln::kernels::group_advantages(r, c["group_size"], c["scale"]))}});
        continue;
      }
      aln::kernels::GrpoLossInputs in;
      in.logps = matrix(c["logps"]).set_requires_grad(true);
      if (c.contains("old_logps")) in.old_logps = matrix(c["old_logps"]);
      if (c.contains("ref_logps")) in.ref_logps = matrix(c["ref_logps"]);
      in.advantages = at::tensor(c["advantages"].get<std::vector<double>>(), at::kDouble);
      in.mask = matrix(c["mask"]);
      const auto norm = c["normalization"] == "sequence" ? aln::kernels::GrpoNormalization::kSequenceMean
                                                         : aln::kernels::GrpoNormalization::kTokenMean;
      auto result = aln::kernels::grpo_loss(in, c["epsilon_low"], c["epsilon_high"], c["beta"], norm);
      auto grads = torch::autograd::grad({result.loss}, {in.logps});
      out.push_back({{"loss", result.loss.item<double>()},
                     {"grad", flat(grads[0])},
                     {"kl", result.kl.item<double>()},
                     {"clip_low", result.clip_low.item<double>()},
                     {"clip_high", result.clip_high.item<double>()}});
    }
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grpo_tool: %s\n", e.what());
    return 1;
  }
}
