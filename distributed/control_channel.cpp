#include "distributed/control_channel.h"

#include <ATen/ATen.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace aln::dist {
namespace {

at::Tensor size_tensor(int64_t value) { return at::full({1}, value, at::kLong); }

at::Tensor bytes_tensor(std::string_view payload) {
  at::Tensor t = at::empty({static_cast<int64_t>(payload.size())}, at::kByte);
  if (!payload.empty()) std::memcpy(t.data_ptr(), payload.data(), payload.size());
  return t;
}

absl::Status check_size(int64_t size, int peer) {
  if (size < 0 || size > kMaxFrameBytes) {
    return absl::DataLossError(
        absl::StrCat("a control frame from rank ", peer, " announced ", size, " bytes (0 to 2 GiB expected)"));
  }
  return absl::OkStatus();
}

// What one frame can carry (protobuf and one MPI call's count stop at 2 GiB).
absl::Status check_outgoing(size_t bytes) {
  if (static_cast<int64_t>(bytes) > kMaxFrameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a control message of ", bytes, " bytes is over the 2 GiB one message can carry"));
  }
  return absl::OkStatus();
}

absl::Status parse_payload(std::string_view payload, int peer, google::protobuf::MessageLite* message) {
  if (!message->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::DataLossError(absl::StrCat("a control message from rank ", peer, " (", payload.size(),
                                            " bytes) does not parse as ", message->GetTypeName()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OutgoingFrame> post_frame(Communicator& channel, int peer, FrameTags tags, std::string_view payload) {
  ALN_RETURN_IF_ERROR(check_outgoing(payload.size()));
  OutgoingFrame frame;
  frame.size = size_tensor(static_cast<int64_t>(payload.size()));
  frame.bytes = bytes_tensor(payload);
  frame.size_sent = channel.send(frame.size, peer, tags.size);
  frame.bytes_sent = channel.send(frame.bytes, peer, tags.bytes);
  return frame;
}

absl::Status send_frame(Communicator& channel, int peer, FrameTags tags, std::string_view payload,
                        std::chrono::milliseconds timeout) {
  auto frame = post_frame(channel, peer, tags, payload);
  if (!frame.ok()) return frame.status();
  ALN_RETURN_IF_ERROR(frame->size_sent->wait(timeout));
  return frame->bytes_sent->wait(timeout);
}

absl::Status send_message(Communicator& channel, int peer, FrameTags tags, const google::protobuf::MessageLite& message,
                          std::chrono::milliseconds timeout) {
  ALN_RETURN_IF_ERROR(check_outgoing(message.ByteSizeLong()));  // before serialising it
  return send_frame(channel, peer, tags, message.SerializeAsString(), timeout);
}

FrameReceiver::FrameReceiver(Communicator& channel, int peer, FrameTags tags)
    : channel_(&channel), peer_(peer), tags_(tags), size_(at::empty({1}, at::kLong)) {
  next();
}

absl::StatusOr<bool> FrameReceiver::poll(std::chrono::milliseconds timeout) {
  if (arrived_) return true;
  if (!pending_->done()) return false;
  const int64_t size = size_.data_ptr<int64_t>()[0];
  ALN_RETURN_IF_ERROR(check_size(size, peer_));
  bytes_ = at::empty({size}, at::kByte);
  pending_ = channel_->recv(bytes_, peer_, tags_.bytes);
  ALN_RETURN_IF_ERROR(pending_->wait(timeout));
  arrived_ = true;
  return true;
}

std::string_view FrameReceiver::payload() const {
  if (!arrived_) return {};
  return {static_cast<const char*>(bytes_.data_ptr()), static_cast<size_t>(bytes_.numel())};
}

absl::Status FrameReceiver::parse(google::protobuf::MessageLite* message) const {
  return parse_payload(payload(), peer_, message);
}

void FrameReceiver::next() {
  arrived_ = false;
  pending_ = channel_->recv(size_, peer_, tags_.size);
}

absl::Status receive_message(Communicator& channel, int peer, FrameTags tags, google::protobuf::MessageLite* message,
                             std::chrono::milliseconds timeout) {
  at::Tensor size = at::empty({1}, at::kLong);
  ALN_RETURN_IF_ERROR(channel.recv(size, peer, tags.size)->wait(timeout));
  ALN_RETURN_IF_ERROR(check_size(size.data_ptr<int64_t>()[0], peer));
  at::Tensor bytes = at::empty({size.data_ptr<int64_t>()[0]}, at::kByte);
  ALN_RETURN_IF_ERROR(channel.recv(bytes, peer, tags.bytes)->wait(timeout));
  return parse_payload({static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel())}, peer,
                       message);
}

absl::Status broadcast_frame(Communicator& channel, int root, std::string* payload,
                             std::chrono::milliseconds timeout) {
  const bool is_root = channel.rank() == root;
  if (is_root) ALN_RETURN_IF_ERROR(check_outgoing(payload->size()));
  at::Tensor size = size_tensor(is_root ? static_cast<int64_t>(payload->size()) : 0);
  ALN_RETURN_IF_ERROR(channel.broadcast(size, root)->wait(timeout));
  const int64_t n = size.data_ptr<int64_t>()[0];
  ALN_RETURN_IF_ERROR(check_size(n, root));
  at::Tensor bytes = is_root ? bytes_tensor(*payload) : at::empty({n}, at::kByte);
  if (n > 0) ALN_RETURN_IF_ERROR(channel.broadcast(bytes, root)->wait(timeout));
  if (!is_root) payload->assign(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(n));
  return absl::OkStatus();
}

}  // namespace aln::dist
