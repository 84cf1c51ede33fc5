#include "distributed/service.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "distributed/control_channel.h"

namespace aln::dist {
namespace {

constexpr FrameTags kTags{1, 2};

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

namespace {

// Polls `ready` (true when done; an error ends the wait) until it is, backing off to 1 ms as a
// Work's wait does; ends early when `cancelled` becomes true or `timeout` passes.
absl::Status poll_unless_cancelled(const std::function<absl::StatusOr<bool>()>& ready,
                                   std::chrono::milliseconds timeout, const std::atomic<bool>& cancelled) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(1);
  while (true) {
    absl::StatusOr<bool> done = ready();
    if (!done.ok()) return done.status();
    if (*done) return absl::OkStatus();
    if (cancelled.load()) return absl::CancelledError("abandoned: the caller is going away");
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("not done within ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

absl::Status send_unless_cancelled(Communicator& channel, int server, const aln::v1::ServiceRequest& request,
                                   std::chrono::milliseconds timeout, const std::atomic<bool>& cancelled) {
  auto frame = post_frame(channel, server, kTags, request.SerializeAsString());  // dropped while posted: safe
  if (!frame.ok()) return frame.status();
  return poll_unless_cancelled([&]() -> absl::StatusOr<bool> { return frame->done(); }, timeout, cancelled);
}

absl::Status receive_unless_cancelled(Communicator& channel, int server, aln::v1::ServiceReply* reply,
                                      std::chrono::milliseconds timeout, const std::atomic<bool>& cancelled) {
  FrameReceiver incoming(channel, server, kTags);  // dropped while posted: its Work keeps the buffer
  ALN_RETURN_IF_ERROR(poll_unless_cancelled([&] { return incoming.poll(timeout); }, timeout, cancelled));
  return incoming.parse(reply);
}

absl::StatusOr<aln::v1::ServiceReply> checked_reply(aln::v1::ServiceReply reply, const std::string& what) {
  if (!reply.error().empty()) {
    const auto code = reply.code() > 0 && reply.code() <= static_cast<int>(absl::StatusCode::kUnauthenticated)
                          ? static_cast<absl::StatusCode>(reply.code())
                          : absl::StatusCode::kInternal;
    return absl::Status(code, absl::StrCat(what, " failed there: ", reply.error()));
  }
  return reply;
}

}  // namespace

absl::StatusOr<aln::v1::ServiceReply> ServiceClient::call(const aln::v1::ServiceRequest& request,
                                                          std::chrono::milliseconds timeout) {
  return call(request, timeout, nullptr, nullptr);
}

absl::StatusOr<aln::v1::ServiceReply> ServiceClient::call(const aln::v1::ServiceRequest& request,
                                                          std::chrono::milliseconds timeout,
                                                          const std::atomic<bool>& cancelled) {
  return call(request, timeout, &cancelled, nullptr);
}

absl::StatusOr<aln::v1::ServiceReply> ServiceClient::call(const aln::v1::ServiceRequest& request,
                                                          std::chrono::milliseconds timeout,
                                                          const std::atomic<bool>* cancelled, const Between& between) {
  const std::string what = absl::StrCat("request \"", request.method(), "\" to rank ", server_);
  if (!broken_.ok()) return absl::Status(broken_.code(), absl::StrCat(what, ": not sent: ", broken_.message()));
  absl::Status sent = cancelled == nullptr ? send_message(*channel_, server_, kTags, request, timeout)
                                           : send_unless_cancelled(*channel_, server_, request, timeout, *cancelled);
  if (!sent.ok()) {
    broken_ = absl::Status(sent.code(), absl::StrCat("an earlier ", what, " was not sent: ", sent.message()));
    return absl::Status(sent.code(), absl::StrCat(what, ": ", sent.message()));
  }
  if (between) {
    absl::Status done = between();
    if (!done.ok()) {
      // The server is inside the request and its reply will come, unread.
      broken_ = absl::Status(done.code(), absl::StrCat("an earlier ", what, " failed: ", done.message()));
      return absl::Status(done.code(), absl::StrCat(what, ": ", done.message()));
    }
  }
  aln::v1::ServiceReply reply;
  absl::Status got = cancelled == nullptr ? receive_message(*channel_, server_, kTags, &reply, timeout)
                                          : receive_unless_cancelled(*channel_, server_, &reply, timeout, *cancelled);
  if (!got.ok()) {
    // Its reply may still come, into a receive no one reads, or into the next call's: the client
    // cannot tell replies apart any more.
    broken_ = absl::Status(got.code(), absl::StrCat("an earlier ", what, " got no reply: ", got.message()));
    return absl::Status(got.code(), absl::StrCat(what, ": no reply: ", got.message()));
  }
  return checked_reply(std::move(reply), what);
}

absl::Status ServiceClient::goodbye(std::chrono::milliseconds timeout) {
  aln::v1::ServiceRequest bye;
  bye.set_goodbye(true);
  return send_message(*channel_, server_, kTags, bye, timeout);
}

absl::Status serve(Communicator* channel, const std::vector<int>& clients, const ServiceHandler& handler,
                   std::chrono::milliseconds timeout) {
  // One receiver per client; a receive dropped while posted (the server leaving early) keeps its
  // buffer alive in its Work.
  std::vector<FrameReceiver> open;
  for (int rank : clients) open.emplace_back(*channel, rank, kTags);
  // Requests come a few times per training step and none at all for long stretches (loading,
  // evaluation, other stages): poll fast right after one, then back off to a few milliseconds,
  // which keeps an idle server off the cores the policy may share.
  auto pause = std::chrono::microseconds(100);
  while (!open.empty()) {
    bool served = false;
    for (size_t i = 0; i < open.size();) {
      FrameReceiver& c = open[i];
      auto arrived = c.poll(timeout);
      if (!arrived.ok()) return arrived.status();
      if (!*arrived) {
        ++i;
        continue;
      }
      served = true;
      aln::v1::ServiceRequest request;
      ALN_RETURN_IF_ERROR(c.parse(&request));
      if (request.goodbye()) {
        open.erase(open.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      aln::v1::ServiceReply reply;
      absl::Status handled = capture_status([&] {
        reply = handler(c.peer(), request);
        return absl::OkStatus();
      });
      if (!handled.ok()) {
        reply.Clear();
        reply.set_error(std::string(handled.message()));
      } else if (static_cast<int64_t>(reply.ByteSizeLong()) > kMaxFrameBytes) {
        const size_t size = reply.ByteSizeLong();
        reply.Clear();
        reply.set_error(absl::StrCat("the reply would be ", size,
                                     " bytes, over the 2 GiB one message can carry; use smaller micro-batches"));
      }
      absl::Status sent = send_message(*channel, c.peer(), kTags, reply, timeout);
      if (!sent.ok()) {
        return absl::Status(sent.code(),
                            absl::StrCat("the reply to rank ", c.peer(), " was not taken: ", sent.message()));
      }
      c.next();
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
