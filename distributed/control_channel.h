#pragma once
// Control messages between ranks, written once: a frame is its payload's size (one int64) and then
// its bytes, each with a tag of its own, always in host memory. The reference and reward services,
// heartbeats, the stage data rank 0 shares and the pipeline's gather all speak frames; tensors a
// step computes (gradients, activations, weights) go over the tensor communicator as they are, so
// a device communicator never has to carry a host-side control message.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "distributed/communicator.h"
#include "google/protobuf/message_lite.h"

namespace aln::dist {

// Protobuf messages (and one MPI call's count) stop at 2 GiB.
constexpr int64_t kMaxFrameBytes = (int64_t{1} << 31) - 1;

struct FrameTags {
  int size = 1;
  int bytes = 2;
};

// A frame on its way out. Both tensors must live until both sends have finished (a Work dropped
// unfinished keeps them alive itself).
struct OutgoingFrame {
  at::Tensor size;
  at::Tensor bytes;
  std::unique_ptr<Work> size_sent;
  std::unique_ptr<Work> bytes_sent;
  bool done() { return size_sent->done() && bytes_sent->done(); }
};

// Posts both sends of `payload` to `peer` and returns at once. InvalidArgument over kMaxFrameBytes.
absl::StatusOr<OutgoingFrame> post_frame(Communicator& channel, int peer, FrameTags tags, std::string_view payload);
// Sends and waits for both halves (bounded).
absl::Status send_frame(Communicator& channel, int peer, FrameTags tags, std::string_view payload,
                        std::chrono::milliseconds timeout);
absl::Status send_message(Communicator& channel, int peer, FrameTags tags, const google::protobuf::MessageLite& message,
                          std::chrono::milliseconds timeout);

// Frames from one peer, for code that watches several peers without blocking (a service answering
// its clients, rank 0 collecting heartbeats): a size receive is always posted; poll() says whether
// a whole frame arrived. Dropping it with a receive posted is safe (the Work keeps its buffer).
class FrameReceiver {
 public:
  FrameReceiver(Communicator& channel, int peer, FrameTags tags);
  int peer() const { return peer_; }
  // True when a frame arrived (then payload() holds it until next()). When the size has come, its
  // bytes are waited for within `timeout`: a size without bytes is an error, as is a size out of range.
  absl::StatusOr<bool> poll(std::chrono::milliseconds timeout);
  std::string_view payload() const;
  absl::Status parse(google::protobuf::MessageLite* message) const;
  // Posts the receive of the next frame.
  void next();

 private:
  Communicator* channel_;
  int peer_;
  FrameTags tags_;
  at::Tensor size_;
  at::Tensor bytes_;
  std::unique_ptr<Work> pending_;
  bool arrived_ = false;
};

// Waits (bounded) for one frame from `peer` and parses it into `message`.
absl::Status receive_message(Communicator& channel, int peer, FrameTags tags, google::protobuf::MessageLite* message,
                             std::chrono::milliseconds timeout);

// Every rank ends with root's payload (two broadcasts: size, then bytes). `payload` is read on
// root and filled on the others.
absl::Status broadcast_frame(Communicator& channel, int root, std::string* payload, std::chrono::milliseconds timeout);

}  // namespace aln::dist
