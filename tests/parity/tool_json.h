#pragma once
// Shared by the parity tools: JSON matrices in and flat float64 lists out.
#include <ATen/ATen.h>

#include <vector>

#include <nlohmann/json.hpp>

namespace aln::parity {

// A JSON list of rows -> a [rows, width] float64 tensor (width: the rows' length when 0; shorter
// rows are zero-padded).
inline at::Tensor matrix(const nlohmann::json& j, int64_t width = 0) {
  const auto rows = j.get<std::vector<std::vector<double>>>();
  if (width == 0 && !rows.empty()) width = static_cast<int64_t>(rows[0].size());
  at::Tensor t = at::zeros({static_cast<int64_t>(rows.size()), width}, at::kDouble);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < rows[r].size(); ++c) t[static_cast<int64_t>(r)][static_cast<int64_t>(c)] = rows[r][c];
  }
  return t;
}

inline std::vector<double> flat(const at::Tensor& t) {
  at::Tensor c = t.contiguous().to(at::kDouble);
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace aln::parity
