#pragma once
// Request and reply between ranks, for work one role does for another (the reward ranks score the
// policy's samples). Messages are aln.v1.ServiceRequest / ServiceReply protobufs, each sent as its
// size and then its bytes, on a communicator of their own (so they never mix with training traffic).
// A client asks its one server and waits, bounded, for the answer; a server answers its clients in
// the order their requests arrive until every one of them has said goodbye.
#include <atomic>
#include <chrono>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aln/v1/control.pb.h"
#include "distributed/communicator.h"

namespace aln::dist {

// Tensors in control messages (CPU; any layout, sent row-major). from_proto checks the dtype name
// and that the bytes match the shape.
void to_proto(const at::Tensor& tensor, aln::v1::TensorData* out);
absl::StatusOr<at::Tensor> from_proto(const aln::v1::TensorData& data);

class ServiceClient {
 public:
  // `channel` must outlive the client; `server` is a rank of it.
  ServiceClient(Communicator* channel, int server) : channel_(channel), server_(server) {}
  int server() const { return server_; }

  // Sends `request` and waits for the reply: `timeout` for each message to go and for the reply to
  // come (so it covers the server's work). A reply with an error comes back as an Internal status
  // carrying the server's message.
  absl::StatusOr<aln::v1::ServiceReply> call(const aln::v1::ServiceRequest& request, std::chrono::milliseconds timeout);
  // The same, called from a thread of its own: the wait for the reply also ends (Cancelled) soon
  // after `*cancelled` becomes true (the send's wait too), so the owner of the thread can always
  // join it. After a call that was not sent or got no reply (cancelled, timed out, failed) every
  // later call fails at once: its reply may still arrive, and would be taken for the next one's.
  // goodbye() still goes.
  absl::StatusOr<aln::v1::ServiceReply> call(const aln::v1::ServiceRequest& request, std::chrono::milliseconds timeout,
                                             const std::atomic<bool>& cancelled);
  // Either of the above (`cancelled` null: the first) with `between` run after the request went and
  // before the reply is waited for: what the server reads on another channel while it handles the
  // request (a rollout rank's weights, broadcast on the tensor channel). Its error is the call's,
  // and breaks the client like a reply that never came.
  using Between = std::function<absl::Status()>;
  absl::StatusOr<aln::v1::ServiceReply> call(const aln::v1::ServiceRequest& request, std::chrono::milliseconds timeout,
                                             const std::atomic<bool>* cancelled, const Between& between);
  // Tells the server this client is done (no reply).
  absl::Status goodbye(std::chrono::milliseconds timeout);

 private:
  Communicator* channel_;
  int server_;
  absl::Status broken_;  // why calls can no longer be matched with their replies
};

using ServiceHandler = std::function<aln::v1::ServiceReply(int client, const aln::v1::ServiceRequest& request)>;

// Serves `clients` (ranks of `channel`) until each has said goodbye. Waiting for a request has no
// limit (an idle server is normal: the policy may be loading, evaluating or writing; a lost client
// ends the job through mpirun or rank 0's heartbeat monitor); a request's bytes that do not follow
// its size, or a reply the client does not take, within `timeout` are errors. The handler's
// exceptions become error replies; the server goes on.
absl::Status serve(Communicator* channel, const std::vector<int>& clients, const ServiceHandler& handler,
                   std::chrono::milliseconds timeout);

}  // namespace aln::dist
