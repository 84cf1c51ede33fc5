#include "trainers/engine/tensor_pieces.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "distributed/service.h"

namespace aln::engine {

absl::Status send_named_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& config_json,
                                const std::function<void(aln::v1::ServiceRequest&)>& start,
                                const std::function<absl::Status(const aln::v1::ServiceRequest&)>& send,
                                const std::string& what, const std::string& advice) {
  aln::v1::ServiceRequest request;
  start(request);
  if (!config_json.empty()) {
    aln::v1::FileData* config = request.add_files();
    config->set_path("config.json");
    config->set_data(config_json);
  }
  size_t bytes = 0;
  for (const auto& [name, tensor] : tensors) {
    const size_t size = static_cast<size_t>(tensor.numel()) * tensor.element_size();
    if (size > kMessageLimit) {
      return absl::ResourceExhaustedError(absl::StrCat(what, " tensor ", name, " is ", size,
                                                       " bytes, over the 2 GiB one control message carries; ", advice));
    }
    if (bytes > 0 && bytes + size > kPieceBytes) {
      absl::Status sent = send(request);
      if (!sent.ok()) return sent;
      request.Clear();
      start(request);
      bytes = 0;
    }
    aln::v1::NamedTensor* named = request.add_named();
    named->set_name(name);
    dist::to_proto(tensor.detach().to(at::kCPU), named->mutable_tensor());
    bytes += size;
  }
  return send(request);
}

}  // namespace aln::engine
