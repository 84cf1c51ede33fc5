#include "trainers/engine/tensor_pieces.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "distributed/service.h"

namespace aln::engine {

TensorSender::TensorSender(const std::string& config_json, Start start, Send send, std::string what, std::string advice)
    : start_(std::move(start)), send_(std::move(send)), what_(std::move(what)), advice_(std::move(advice)) {
  start_(request_);
  if (!config_json.empty()) {
    aln::v1::FileData* config = request_.add_files();
    config->set_path("config.json");
    config->set_data(config_json);
  }
}

absl::Status TensorSender::add(const std::string& name, const at::Tensor& tensor) {
  const size_t size = static_cast<size_t>(tensor.numel()) * tensor.element_size();
  if (size > kMessageLimit) {
    return absl::ResourceExhaustedError(absl::StrCat(what_, " tensor ", name, " is ", size,
                                                     " bytes, over the 2 GiB one control message carries; ", advice_));
  }
  if (bytes_ > 0 && bytes_ + size > kPieceBytes) {
    absl::Status sent = send_(request_);
    if (!sent.ok()) return sent;
    request_.Clear();
    start_(request_);
    bytes_ = 0;
  }
  aln::v1::NamedTensor* named = request_.add_named();
  named->set_name(name);
  dist::to_proto(tensor.detach().to(at::kCPU), named->mutable_tensor());
  bytes_ += size;
  return absl::OkStatus();
}

absl::Status TensorSender::finish() { return send_(request_); }

absl::Status send_named_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& config_json,
                                const std::function<void(aln::v1::ServiceRequest&)>& start,
                                const std::function<absl::Status(const aln::v1::ServiceRequest&)>& send,
                                const std::string& what, const std::string& advice) {
  TensorSender sender(config_json, start, send, what, advice);
  for (const auto& [name, tensor] : tensors) {
    absl::Status added = sender.add(name, tensor);
    if (!added.ok()) return added;
  }
  return sender.finish();
}

}  // namespace aln::engine
