#pragma once
// One of a step's scalars as a trainer reports it: a 0-dim tensor, left where it was computed until
// the engine reads all of the step's scalars in one device-to-host copy (train_step.cpp), or a
// number the trainer already holds on the host (a count, a rate). A trainer never calls .item()
// for a metric: that would stall a GPU stream once per scalar per micro-batch.
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace aln::trainers {

class MetricValue {
 public:
  MetricValue() = default;
  MetricValue(double value) : host_(value) {}  // NOLINT: a number is a metric
  MetricValue(const at::Tensor& value) : tensor_(value.defined() ? value.detach() : value) {}  // NOLINT: and a 0-dim tensor

  bool on_host() const { return !tensor_.defined(); }
  const at::Tensor& tensor() const { return tensor_; }
  double host() const { return host_; }
  // The number, reading a tensor (a host sync): for tests and code off the step path.
  double value() const { return on_host() ? host_ : tensor_.item<double>(); }

 private:
  at::Tensor tensor_;
  double host_ = 0;
};

using Metrics = std::map<std::string, MetricValue>;

// Every value read (off the step path: evaluation, tools, tests).
std::map<std::string, double> read_all(const Metrics& metrics);

}  // namespace aln::trainers
