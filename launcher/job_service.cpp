#include "launcher/job_service.h"

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace aln::launcher {
namespace {

const char* code_name(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "OK";
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kNotFound:
      return "NOT_FOUND";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    case absl::StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    default:
      return "OTHER";
  }
}

// Compares without an early exit, so the time a wrong token takes says nothing about the right one.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  return diff == 0;
}

std::string metadata(grpc::CallbackServerContext* context, const char* key) {
  const auto& md = context->client_metadata();
  auto it = md.find(key);
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

// A server stream the ticker drives: each tick offers the stream its next message (next(), called
// under the stream's lock while no write is in flight); the reactions below are the same for both
// streams. Derived constructors call start() last, so the first tick sees them fully built.
template <typename T>
class TickedStream : public grpc::ServerWriteReactor<T>, public Tickable {
 public:
  TickedStream(JobManager& manager, StreamTicker& ticker) : manager_(manager), ticker_(ticker) {}
  void tick() final {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (writing_ || finished_) return;
    next();
  }
  void OnWriteDone(bool ok) final {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    writing_ = false;
    if (!ok && !finished_) end(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
  }
  void OnCancel() final {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!writing_ && !finished_) end(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }
  void OnDone() final {
    ticker_.remove(this);
    delete this;
  }

 protected:
  virtual void next() = 0;
  void start() { ticker_.add(this); }
  void send() {
    writing_ = true;
    this->StartWrite(&message_);
  }
  void end(const grpc::Status& status) {
    finished_ = true;
    this->Finish(status);
  }
  JobManager& manager_;
  T message_;

 private:
  StreamTicker& ticker_;
  std::recursive_mutex mu_;
  bool writing_ = false;
  bool finished_ = false;
};

// WatchJob: sends the job's status whenever it changed, ends after sending a final state.
class WatchReactor final : public TickedStream<aln::v1::JobStatus> {
 public:
  WatchReactor(JobManager& manager, StreamTicker& ticker, std::string job_id, Principal who)
      : TickedStream(manager, ticker), job_id_(std::move(job_id)), who_(std::move(who)) {
    start();
  }

 private:
  void next() override {
    if (sent_final_) return end(grpc::Status::OK);
    auto status = manager_.get(job_id_, who_);
    if (!status.ok()) return end(to_grpc(status.status()));
    std::string bytes = status->SerializeAsString();
    if (bytes == last_) return;
    last_ = std::move(bytes);
    message_ = *status;
    sent_final_ = is_terminal(message_.state());
    send();
  }
  std::string job_id_;
  Principal who_;
  bool sent_final_ = false;
  std::string last_;
};

// StreamLogs: the log from `offset` in chunks; in follow mode it waits for more until the job ends.
class LogsReactor final : public TickedStream<aln::v1::LogChunk> {
 public:
  LogsReactor(JobManager& manager, StreamTicker& ticker, const aln::v1::StreamLogsRequest& request, Principal who)
      : TickedStream(manager, ticker),
        job_id_(request.job_id()),
        who_(std::move(who)),
        follow_(request.follow()),
        offset_(std::max<int64_t>(0, request.offset())) {
    start();
  }

 private:
  void next() override {
    auto log = manager_.log_of(job_id_, who_);
    if (!log.ok()) return end(to_grpc(log.status()));
    const bool ended = log->second;  // read before the file, so no line written before the end is missed
    std::ifstream in(log->first, std::ios::binary);
    std::string data;
    if (in) {
      in.seekg(offset_);
      data.resize(64 << 10);
      in.read(data.data(), static_cast<std::streamsize>(data.size()));
      data.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
    }
    if (data.empty()) {
      if (!follow_ || ended) end(grpc::Status::OK);
      return;
    }
    message_.set_offset(offset_);
    offset_ += static_cast<int64_t>(data.size());
    message_.set_data(std::move(data));
    send();
  }
  std::string job_id_;
  Principal who_;
  bool follow_;
  int64_t offset_;
};

// A stream refused before it started (authentication, bad request).
template <typename T>
class RefusedStream final : public grpc::ServerWriteReactor<T> {
 public:
  explicit RefusedStream(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::Status to_grpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

StreamTicker::StreamTicker(int interval_ms, prometheus::Gauge* open_streams)
    : interval_ms_(interval_ms), open_streams_gauge_(open_streams) {
  thread_ = std::thread([this] { run(); });
}

StreamTicker::~StreamTicker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  thread_.join();
}

void StreamTicker::add(Tickable* t) {
  // The first message goes out now, not at the next tick. Under the ticker's lock, like every
  // tick: a stream that finishes at once cannot be deleted (OnDone -> remove) until this returns.
  std::lock_guard<std::mutex> lock(mu_);
  streams_.insert(t);
  t->tick();
}

void StreamTicker::remove(Tickable* t) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(t);
}

size_t StreamTicker::open_streams() const {
  std::lock_guard<std::mutex> lock(mu_);
  return streams_.size();
}

void StreamTicker::run() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      for (Tickable* t : streams_) t->tick();
      if (open_streams_gauge_ != nullptr) open_streams_gauge_->Set(static_cast<double>(streams_.size()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms_));
  }
}

JobServiceImpl::JobServiceImpl(JobManager& manager, std::map<std::string, Principal> tokens, MetricsRegistry& metrics)
    : manager_(manager),
      tokens_(std::move(tokens)),
      latency_(metrics.histogram_family("aln_launcher_rpc_duration_seconds", "Time to answer a unary RPC")),
      calls_(metrics.counter_family("aln_launcher_rpcs_total", "RPCs answered, by method and status code")),
      ticker_(50, &metrics.gauge("aln_launcher_open_streams", "Open WatchJob and StreamLogs streams")) {}

absl::StatusOr<Principal> JobServiceImpl::authenticate(grpc::CallbackServerContext* context) const {
  if (tokens_.empty()) {
    std::string user = metadata(context, "x-aln-user");
    return Principal{user.empty() ? "anonymous" : user, false};
  }
  const std::string header = metadata(context, "authorization");
  if (header.empty()) {
    return absl::UnauthenticatedError(
        "no bearer token: this launcher requires one (alnctl --token-file FILE or ALN_TOKEN)");
  }
  if (!absl::StartsWith(header, "Bearer ")) {
    return absl::UnauthenticatedError("the authorization header must be `Bearer TOKEN`");
  }
  const std::string token = header.substr(7);
  const Principal* found = nullptr;
  for (const auto& [known, principal] : tokens_) {
    if (same_secret(token, known)) found = &principal;
  }
  if (found == nullptr) return absl::UnauthenticatedError("unknown token; ask the launcher's admin for one");
  return *found;
}

void JobServiceImpl::count(const char* method, const absl::Status& status) {
  calls_.Add({{"method", method}, {"code", code_name(status.code())}}).Increment();
}

grpc::ServerUnaryReactor* JobServiceImpl::finish(grpc::CallbackServerContext* context, const char* method,
                                                 std::chrono::steady_clock::time_point start,
                                                 const absl::Status& status) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                   0.05,   0.1,   0.25,   0.5,   1.0};
  latency_.Add({{"method", method}}, kBuckets).Observe(seconds);
  count(method, status);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(to_grpc(status));
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* context,
                                                    const aln::v1::SubmitJobRequest* request,
                                                    aln::v1::SubmitJobResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  auto who = authenticate(context);
  if (!who.ok()) return finish(context, "SubmitJob", start, who.status());
  auto status = manager_.submit(*request, who->user);
  if (status.ok()) response->set_job_id(status->job_id());
  return finish(context, "SubmitJob", start, status.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                 const aln::v1::GetJobRequest* request, aln::v1::JobStatus* response) {
  const auto start = std::chrono::steady_clock::now();
  auto who = authenticate(context);
  if (!who.ok()) return finish(context, "GetJob", start, who.status());
  auto status = manager_.get(request->job_id(), *who);
  if (status.ok()) *response = std::move(*status);
  return finish(context, "GetJob", start, status.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                   const aln::v1::ListJobsRequest* request,
                                                   aln::v1::ListJobsResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  auto who = authenticate(context);
  if (!who.ok()) return finish(context, "ListJobs", start, who.status());
  auto page = manager_.list(*request, *who);
  if (page.ok()) *response = std::move(*page);
  return finish(context, "ListJobs", start, page.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                    const aln::v1::CancelJobRequest* request,
                                                    aln::v1::CancelJobResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  auto who = authenticate(context);
  if (!who.ok()) return finish(context, "CancelJob", start, who.status());
  auto status = manager_.cancel(request->job_id(), *who);
  if (status.ok()) *response->mutable_job() = std::move(*status);
  return finish(context, "CancelJob", start, status.status());
}

grpc::ServerWriteReactor<aln::v1::JobStatus>* JobServiceImpl::WatchJob(grpc::CallbackServerContext* context,
                                                                       const aln::v1::WatchJobRequest* request) {
  auto who = authenticate(context);
  absl::Status status = who.status();
  if (status.ok()) status = manager_.get(request->job_id(), *who).status();
  count("WatchJob", status);
  if (!status.ok()) return new RefusedStream<aln::v1::JobStatus>(to_grpc(status));
  return new WatchReactor(manager_, ticker_, request->job_id(), *who);
}

grpc::ServerWriteReactor<aln::v1::LogChunk>* JobServiceImpl::StreamLogs(grpc::CallbackServerContext* context,
                                                                        const aln::v1::StreamLogsRequest* request) {
  auto who = authenticate(context);
  absl::Status status = who.status();
  if (status.ok()) status = manager_.log_of(request->job_id(), *who).status();
  count("StreamLogs", status);
  if (!status.ok()) return new RefusedStream<aln::v1::LogChunk>(to_grpc(status));
  return new LogsReactor(manager_, ticker_, *request, *who);
}

}  // namespace aln::launcher
