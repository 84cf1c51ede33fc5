#include "trainers/metric_value.h"

#include <ATen/ATen.h>

#include <vector>

namespace aln::trainers {

std::map<std::string, double> read_all(const Metrics& metrics) {
  std::map<std::string, double> out;
  std::vector<std::string> names;
  std::vector<at::Tensor> values;
  for (const auto& [name, v] : metrics) {
    if (v.on_host()) {
      out[name] = v.host();
    } else {
      names.push_back(name);
      values.push_back(v.tensor().reshape({}).to(at::kDouble));
    }
  }
  if (values.empty()) return out;
  const at::Tensor host = at::stack(values).to(at::kCPU);  // one copy for them all
  const double* read = host.data_ptr<double>();
  for (size_t i = 0; i < names.size(); ++i) out[names[i]] = read[i];
  return out;
}

}  // namespace aln::trainers
