#pragma once
// A model's (or an optimizer's) tensors sent as service requests of bounded size: to the
// coordinator's own process (job_outputs.cpp) and to a rollout rank (rollout_role.cpp).
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

// Sends `tensors` by name in requests of at most kPieceBytes of tensor data (host copies), with
// `config_json` as the file config.json in the first when it is not empty. `start` labels each
// fresh request; `send` sends one. A tensor no control message can carry is refused naming `what`,
// the tensor, and `advice` (what to do instead).
absl::Status send_named_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& config_json,
                                const std::function<void(aln::v1::ServiceRequest&)>& start,
                                const std::function<absl::Status(const aln::v1::ServiceRequest&)>& send,
                                const std::string& what, const std::string& advice);

}  // namespace aln::engine
