#include "distributed/communicator.h"

#include <algorithm>
#include <utility>

namespace aln::dist {
namespace {

using Clock = std::chrono::steady_clock;

class JoinedWork final : public Work {
 public:
  explicit JoinedWork(std::vector<std::unique_ptr<Work>> parts) : parts_(std::move(parts)) {}

  absl::Status wait(std::chrono::milliseconds timeout) override {
    // One deadline for the whole: the caller gave one timeout for one operation.
    const auto deadline = Clock::now() + timeout;
    for (size_t i = 0; i < parts_.size(); ++i) {
      const auto left = i == 0
                            ? timeout
                            : std::max(std::chrono::milliseconds(0),
                                       std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
      if (absl::Status s = parts_[i]->wait(left); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  absl::Status wait_on_stream(std::chrono::milliseconds timeout) override {
    for (auto& part : parts_) {
      if (absl::Status s = part->wait_on_stream(timeout); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  void progress() override {
    for (auto& part : parts_) part->progress();
  }
  bool done() override {
    bool all = true;
    for (auto& part : parts_) all = part->done() && all;  // advances every part
    return all;
  }

 private:
  std::vector<std::unique_ptr<Work>> parts_;
};

}  // namespace

std::unique_ptr<Work> joined_work(std::vector<std::unique_ptr<Work>> parts) {
  return std::make_unique<JoinedWork>(std::move(parts));
}

std::unique_ptr<Work> Communicator::send_recv(const at::Tensor& send_tensor, int send_peer, int send_tag,
                                              at::Tensor& recv_tensor, int recv_peer, int recv_tag) {
  std::unique_ptr<Work> sent = send(send_tensor, send_peer, send_tag);
  std::vector<std::unique_ptr<Work>> parts;
  // The receive is waited for first: what the caller needs, and what a stalled peer shows as.
  parts.push_back(recv(recv_tensor, recv_peer, recv_tag));
  parts.push_back(std::move(sent));
  return joined_work(std::move(parts));
}

}  // namespace aln::dist
