#include "distributed/service.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace aln::dist {
namespace {

constexpr int kSizeTag = 1, kBytesTag = 2;
// Protobuf messages (and one MPI call's count) stop at 2 GiB.
constexpr size_t kMaxMessageBytes = (size_t{1} << 31) - 1;

const std::map<std::string, at::ScalarType>& dtypes() {
  static const auto* table = new std::map<std::string, at::ScalarType>{
      {"int64", at::kLong},        {"int32", at::kInt},    {"float32", at::kFloat}, {"float64", at::kDouble},
      {"bfloat16", at::kBFloat16}, {"float16", at::kHalf}, {"uint8", at::kByte},    {"bool", at::kBool}};
  return *table;
}

std::string dtype_name(at::ScalarType type) {
  for (const auto& [name, t] : dtypes()) {
    if (t == type) return name;
  }
  ALN_FAIL("control messages carry no ", c10::toString(type), " tensors");
}

// Sends a message as two: its size, then its bytes; waits for both (bounded).
absl::Status send_message(Communicator& channel, int peer, const google::protobuf::MessageLite& message,
                          std::chrono::milliseconds timeout) {
  if (message.ByteSizeLong() > kMaxMessageBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a control message of ", message.ByteSizeLong(),
                                                   " bytes is over the 2 GiB one message can carry"));
  }
  const std::string bytes = message.SerializeAsString();
  at::Tensor size = at::full({1}, static_cast<int64_t>(bytes.size()), at::kLong);
  at::Tensor data = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  if (!bytes.empty()) std::memcpy(data.data_ptr(), bytes.data(), bytes.size());
  auto a = channel.send(size, peer, kSizeTag);
  auto b = channel.send(data, peer, kBytesTag);
  ALN_RETURN_IF_ERROR(a->wait(timeout));
  return b->wait(timeout);
}

// The bytes that follow a received size, parsed.
template <typename Message>
absl::StatusOr<Message> receive_body(Communicator& channel, int peer, int64_t size, std::chrono::milliseconds timeout) {
  at::Tensor data = at::empty({size}, at::kByte);
  ALN_RETURN_IF_ERROR(channel.recv(data, peer, kBytesTag)->wait(timeout));
  Message message;
  if (!message.ParseFromArray(data.data_ptr(), static_cast<int>(size))) {
    return absl::DataLossError(
        absl::StrCat("a control message from rank ", peer, " (", size, " bytes) does not parse"));
  }
  return message;
}

}  // namespace

void to_proto(const at::Tensor& tensor, aln::v1::TensorData* out) {
  const at::Tensor t = tensor.contiguous().cpu();
  out->set_dtype(dtype_name(t.scalar_type()));
  out->clear_shape();
  for (int64_t d : t.sizes()) out->add_shape(d);
  out->set_data(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
}

absl::StatusOr<at::Tensor> from_proto(const aln::v1::TensorData& data) {
  auto it = dtypes().find(data.dtype());
  if (it == dtypes().end())
    return absl::InvalidArgumentError(absl::StrCat("tensor dtype \"", data.dtype(), "\" unknown"));
  std::vector<int64_t> shape(data.shape().begin(), data.shape().end());
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError("tensor shape has a negative dimension");
    count *= d;
  }
  at::Tensor t = at::empty(shape, it->second);
  if (static_cast<size_t>(count * t.element_size()) != data.data().size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor of ", count, " ", data.dtype(), " elements arrived with ", data.data().size(), " bytes"));
  }
  if (count > 0) std::memcpy(t.data_ptr(), data.data().data(), data.data().size());
  return t;
}

absl::StatusOr<aln::v1::ServiceReply> ServiceClient::call(const aln::v1::ServiceRequest& request,
                                                          std::chrono::milliseconds timeout) {
  const std::string what = absl::StrCat("request \"", request.method(), "\" to rank ", server_);
  absl::Status sent = send_message(*channel_, server_, request, timeout);
  if (!sent.ok()) return absl::Status(sent.code(), absl::StrCat(what, ": ", sent.message()));
  at::Tensor size = at::empty({1}, at::kLong);
  absl::Status got = channel_->recv(size, server_, kSizeTag)->wait(timeout);
  if (!got.ok()) return absl::Status(got.code(), absl::StrCat(what, ": no reply: ", got.message()));
  auto reply = receive_body<aln::v1::ServiceReply>(*channel_, server_, size.item<int64_t>(), timeout);
  if (!reply.ok()) return absl::Status(reply.status().code(), absl::StrCat(what, ": ", reply.status().message()));
  if (!reply->error().empty()) {
    const auto code = reply->code() > 0 && reply->code() <= static_cast<int>(absl::StatusCode::kUnauthenticated)
                          ? static_cast<absl::StatusCode>(reply->code())
                          : absl::StatusCode::kInternal;
    return absl::Status(code, absl::StrCat(what, " failed there: ", reply->error()));
  }
  return reply;
}

absl::Status ServiceClient::goodbye(std::chrono::milliseconds timeout) {
  aln::v1::ServiceRequest bye;
  bye.set_goodbye(true);
  return send_message(*channel_, server_, bye, timeout);
}

absl::Status serve(Communicator* channel, const std::vector<int>& clients, const ServiceHandler& handler,
                   std::chrono::milliseconds timeout) {
  struct Client {
    int rank;
    at::Tensor size = at::empty({1}, at::kLong);
    std::unique_ptr<Work> pending;  // an unfinished Work keeps its buffer alive when the server leaves early
  };
  std::vector<Client> open;
  for (int rank : clients) {
    open.push_back(Client{rank, at::empty({1}, at::kLong), nullptr});
    open.back().pending = channel->recv(open.back().size, rank, kSizeTag);
  }
  // Requests come a few times per training step and none at all for long stretches (loading,
  // evaluation, other stages): poll fast right after one, then back off to a few milliseconds,
  // which keeps an idle server off the cores the policy may share.
  auto pause = std::chrono::microseconds(100);
  while (!open.empty()) {
    bool served = false;
    for (size_t i = 0; i < open.size();) {
      Client& c = open[i];
      if (!c.pending->done()) {
        ++i;
        continue;
      }
      served = true;
      auto request = receive_body<aln::v1::ServiceRequest>(*channel, c.rank, c.size.item<int64_t>(), timeout);
      if (!request.ok()) return request.status();
      if (request->goodbye()) {
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      aln::v1::ServiceReply reply;
      absl::Status handled = capture_status([&] {
        reply = handler(c.rank, *request);
        return absl::OkStatus();
      });
      if (!handled.ok()) {
        reply.Clear();
        reply.set_error(std::string(handled.message()));
      } else if (reply.ByteSizeLong() > kMaxMessageBytes) {
        const size_t size = reply.ByteSizeLong();
        reply.Clear();
        reply.set_error(absl::StrCat("the reply would be ", size,
                                     " bytes, over the 2 GiB one message can carry; use smaller micro-batches"));
      }
      absl::Status sent = send_message(*channel, c.rank, reply, timeout);
      if (!sent.ok()) {
        return absl::Status(sent.code(),
                            absl::StrCat("the reply to rank ", c.rank, " was not taken: ", sent.message()));
      }
      c.pending = channel->recv(c.size, c.rank, kSizeTag);
      ++i;
    }
    if (served) {
      pause = std::chrono::microseconds(100);
    } else {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(5000));
    }
  }
  return absl::OkStatus();
}

}  // namespace aln::dist
