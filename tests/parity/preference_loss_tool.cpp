// Test helper for tests/parity/preference_loss_parity.py: reads cases (per-token log-probs, masks,
// reference sums, loss settings) as JSON on stdin, computes Aln's loss in float64 and its gradient
// with respect to the per-token policy log-probs, and prints them as JSON.
#include <cstdio>
#include <iostream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/autograd.h>

#include "kernels/preference_losses.h"

namespace {

using nlohmann::json;

at::Tensor matrix(const json& j) {
  const auto rows = j.get<std::vector<std::vector<double>>>();
  at::Tensor t = at::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows.empty() ? 0 : rows[0].size())},
                           at::kDouble);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < rows[r].size(); ++c) t[r][c] = rows[r][c];
  }
  return t;
}

at::Tensor vec(const json& j) { return at::tensor(j.get<std::vector<double>>(), at::kDouble); }

std::vector<std::vector<double>> to_rows(const at::Tensor& t) {
  std::vector<std::vector<double>> out(t.size(0), std::vector<double>(t.size(1)));
  for (int64_t r = 0; r < t.size(0); ++r) {
    for (int64_t c = 0; c < t.size(1); ++c) out[r][c] = t[r][c].item<double>();
  }
  return out;
}

json run_case(const json& c) {
  at::Tensor chosen_tok = matrix(c["chosen_logps"]).set_requires_grad(true);
  at::Tensor rejected_tok = matrix(c["rejected_logps"]).set_requires_grad(true);
  at::Tensor chosen_mask = matrix(c["chosen_mask"]), rejected_mask = matrix(c["rejected_mask"]);
  aln::kernels::PairLogprobs in;
  in.policy_chosen = (chosen_tok * chosen_mask).sum(1);
  in.policy_rejected = (rejected_tok * rejected_mask).sum(1);
  in.reference_chosen = vec(c["ref_chosen"]);
  in.reference_rejected = vec(c["ref_rejected"]);
  in.chosen_tokens = chosen_mask.sum(1);
  in.rejected_tokens = rejected_mask.sum(1);
  const std::string type = c["loss_type"];
  const double beta = c["beta"];
  aln::kernels::PairLossOutput out;
  if (type == "safedpo") {
    out = aln::kernels::safedpo_loss(in, vec(c["unsafe_chosen"]), vec(c["unsafe_rejected"]), beta, c["delta"]);
  } else {
    const auto kind = type == "sigmoid" ? aln::kernels::DpoLossType::kSigmoid
                      : type == "ipo"   ? aln::kernels::DpoLossType::kIpo
                      : type == "hinge" ? aln::kernels::DpoLossType::kHinge
                                        : aln::kernels::DpoLossType::kRobust;
    out = aln::kernels::dpo_loss(in, kind, beta, c["label_smoothing"]);
  }
  auto grads = torch::autograd::grad({out.loss}, {chosen_tok, rejected_tok});
  return json{{"loss", out.loss.item<double>()}, {"grad_chosen", to_rows(grads[0])},
              {"grad_rejected", to_rows(grads[1])}, {"accuracy", out.accuracy.item<double>()}, {"margin", out.margin.item<double>()}};
}

}  // namespace

int main() {
  try {
    json input = json::parse(std::cin);
    json output = json::array();
    for (const auto& c : input["cases"]) output.push_back(run_case(c));
    std::cout << output.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "preference_loss_tool: %s\n", e.what());
    return 1;
  }
}
