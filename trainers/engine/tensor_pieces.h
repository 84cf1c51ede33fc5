#pragma once
// A model's (or an optimizer's) tensors sent as service requests of bounded size, to the
// coordinator's own process (job_outputs.cpp). (A rollout rank takes its weights on the tensor
// channel instead: rollout_role.cpp.)
#include <cstddef>
#include <functional>
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "aln/v1/control.pb.h"

namespace aln::engine {

// Messages stay well under protobuf's 2 GiB limit; a single tensor must fit in one.
inline constexpr size_t kPieceBytes = size_t{256} << 20;
inline constexpr size_t kMessageLimit = (size_t{1} << 31) - (size_t{1} << 20);

// Tensors sent by name as they come, in requests of at most kPieceBytes of tensor data (host
// copies: a tensor may be freed once add() returns), with `config_json` as the file config.json in
// the first when it is not empty. `start` labels each fresh request; `send` sends one. A tensor no
// control message can carry is refused naming `what`, the tensor, and `advice` (what to do instead).
class TensorSender {
 public:
  using Start = std::function<void(aln::v1::ServiceRequest&)>;
  using Send = std::function<absl::Status(const aln::v1::ServiceRequest&)>;
  TensorSender(const std::string& config_json, Start start, Send send, std::string what, std::string advice);
  absl::Status add(const std::string& name, const at::Tensor& tensor);
  absl::Status finish();  // sends what is left (the first request, config.json alone, when nothing was added)

 private:
  Start start_;
  Send send_;
  std::string what_, advice_;
  aln::v1::ServiceRequest request_;
  size_t bytes_ = 0;
};

// All of `tensors` at once, in name order.
absl::Status send_named_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& config_json,
                                const std::function<void(aln::v1::ServiceRequest&)>& start,
                                const std::function<absl::Status(const aln::v1::ServiceRequest&)>& send,
                                const std::string& what, const std::string& advice);

}  // namespace aln::engine
