#pragma once
// JobService over gRPC's callback API. Every RPC authenticates first (bearer token from the tokens
// file; without one the launcher trusts the client-declared user, for loopback development), then
// calls the JobManager. The two server streams (WatchJob, StreamLogs) are driven by one ticker
// thread that offers each open stream its next message.
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "aln/v1/launcher.grpc.pb.h"
#include "core/metrics.h"
#include "launcher/job_manager.h"
#include "launcher/launcher_config.h"

namespace aln::launcher {

// Something the ticker wakes up every few milliseconds (an open server stream).
class Tickable {
 public:
  virtual ~Tickable() = default;
  virtual void tick() = 0;
};

class StreamTicker {
 public:
  // `open_streams` (may be null) is kept equal to the number of open streams.
  StreamTicker(int interval_ms, prometheus::Gauge* open_streams);
  ~StreamTicker();
  // Registers `t` and gives it its first tick.
  void add(Tickable* t);
  // Blocks while a tick of `t` is under way, so `t` may be deleted afterwards.
  void remove(Tickable* t);
  size_t open_streams() const;

 private:
  void run();
  mutable std::mutex mu_;
  std::set<Tickable*> streams_;
  bool stop_ = false;
  int interval_ms_;
  prometheus::Gauge* open_streams_gauge_;
  std::thread thread_;
};

class JobServiceImpl final : public aln::v1::JobService::CallbackService {
 public:
  // `tokens` empty: no authentication.
  JobServiceImpl(JobManager& manager, std::map<std::string, Principal> tokens, MetricsRegistry& metrics);

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context, const aln::v1::SubmitJobRequest* request,
                                      aln::v1::SubmitJobResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context, const aln::v1::GetJobRequest* request,
                                   aln::v1::JobStatus* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context, const aln::v1::ListJobsRequest* request,
                                     aln::v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context, const aln::v1::CancelJobRequest* request,
                                      aln::v1::CancelJobResponse* response) override;
  grpc::ServerWriteReactor<aln::v1::JobStatus>* WatchJob(grpc::CallbackServerContext* context,
                                                         const aln::v1::WatchJobRequest* request) override;
  grpc::ServerWriteReactor<aln::v1::LogChunk>* StreamLogs(grpc::CallbackServerContext* context,
                                                          const aln::v1::StreamLogsRequest* request) override;

 private:
  absl::StatusOr<Principal> authenticate(grpc::CallbackServerContext* context) const;
  // Records the RPC's latency and outcome, then finishes it.
  grpc::ServerUnaryReactor* finish(grpc::CallbackServerContext* context, const char* method,
                                   std::chrono::steady_clock::time_point start, const absl::Status& status);
  void count(const char* method, const absl::Status& status);

  JobManager& manager_;
  std::map<std::string, Principal> tokens_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Counter>& calls_;
  StreamTicker ticker_;
};

// absl::Status -> grpc::Status (same codes, same message).
grpc::Status to_grpc(const absl::Status& status);

}  // namespace aln::launcher
