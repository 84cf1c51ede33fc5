#pragma once
// The launcher's heart: the job queue over the resource pool, the state machine
// QUEUED -> STARTING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED (LOST after a restart that found
// nothing to re-attach to), progress from each job's train_log.jsonl, and the durable store.
// One mutex guards all jobs; a poll thread starts queued jobs, reaps ended ones and reads progress.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/launcher.pb.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "launcher/job_record.h"
#include "launcher/job_store.h"
#include "launcher/launcher_config.h"

namespace aln::launcher {

// The newest complete line a job appended to its train_log.jsonl since `offset`, and the offset to
// read from next. Reads at most kProgressWindow bytes however much was written (a line longer than
// that is skipped): called with no lock held, for every running job, every poll.
constexpr int64_t kProgressWindow = 64 << 10;
struct ProgressTail {
  int64_t offset = 0;
  std::optional<std::string> line;
};
ProgressTail read_progress_tail(const std::string& path, int64_t offset);

class JobManager {
 public:
  // Opens the store under config.data_dir, re-attaches to jobs that still run and marks the others.
  static absl::StatusOr<std::unique_ptr<JobManager>> create(LauncherConfig config, MetricsRegistry& metrics,
                                                            Logger log);
  // Stops the poll thread. Running jobs keep running: a restarted launcher re-attaches to them.
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Validates (schema, cross-field rules, placement against the pool) and queues. Errors are
  // INVALID_ARGUMENT naming the key path (and line, for YAML).
  absl::StatusOr<aln::v1::JobStatus> submit(const aln::v1::SubmitJobRequest& request, const std::string& user);
  // Reads are the owner's or an admin's: another user's job is PERMISSION_DENIED.
  absl::StatusOr<aln::v1::JobStatus> get(const std::string& job_id, const Principal& who) const;
  // One page of the jobs `who` may see (ListJobsRequest says how pages work).
  absl::StatusOr<aln::v1::ListJobsResponse> list(const aln::v1::ListJobsRequest& request, const Principal& who) const;
  // Queued jobs end at once; running ones get SIGTERM, then SIGKILL after the grace period.
  // Only the job's owner or an admin may cancel (PERMISSION_DENIED otherwise).
  absl::StatusOr<aln::v1::JobStatus> cancel(const std::string& job_id, const Principal& who);
  // The job's log file and whether the job has ended (no more lines will come).
  absl::StatusOr<std::pair<std::string, bool>> log_of(const std::string& job_id, const Principal& who) const;
  // Prometheus HTTP service discovery: the /metrics targets of starting and running jobs (JSON).
  std::string service_discovery_json() const;

  const LauncherConfig& config() const { return config_; }

 private:
  struct Job {
    JobRecord record;
    bool reattached = false;  // not our child: watched through /proc and the exit-status file
    bool launching = false;   // launch() owns it: no process, or one waiting at its gate
    bool cancel_requested = false;
    std::chrono::steady_clock::time_point kill_at;
    bool killed = false;
    std::string cancelled_by;
    std::chrono::steady_clock::time_point started;
    std::optional<int> ended;  // the leader's wait status, once reaped; finished after a last read
  };

  JobManager(LauncherConfig config, std::unique_ptr<JobStore> store, MetricsRegistry& metrics, Logger log);
  absl::Status recover();
  void poll_loop();
  // A STARTING job whose /metrics port poll_once asks about outside the lock.
  struct Probe {
    std::string job_id;
    std::string host;
    int port = 0;
  };

  void poll_once();
  // Takes queued jobs whose slots are free, records each as launching (STARTING, no process yet)
  // and appends its id to `to_start`.
  void schedule_locked(std::vector<std::string>* to_start);
  // Starts a job schedule_locked took: fork outside the lock, the process group recorded durably,
  // then the gate opened (launcher/process_group.h), so a crash never leaves two copies running.
  void launch(const std::string& job_id);
  // The /sd target of a job about to start, from the spec and the pool (parses the spec).
  std::string metrics_url(const JobRecord& record) const;
  // Reaps or kills after the grace period; a leader that ended is noted in Job::ended.
  void check_running_locked(Job& job);
  void finish_ended_locked(Job& job);
  void finish_locked(Job& job, aln::v1::JobState state, int exit_code, std::string cause);
  void apply_progress_locked(Job& job, const std::string& line);
  void persist_locked(const Job& job);
  void update_gauges_locked();
  int pick_metrics_port_locked() const;
  std::string job_dir(const std::string& job_id) const;
  aln::v1::JobStatus snapshot_locked(const Job& job) const;
  // The job `who` may read, or NOT_FOUND / PERMISSION_DENIED.
  absl::StatusOr<const Job*> readable_locked(const std::string& job_id, const Principal& who) const;

  LauncherConfig config_;
  std::unique_ptr<JobStore> store_;
  MetricsRegistry& metrics_;
  Logger log_;

  mutable std::mutex mu_;
  std::map<std::string, Job> jobs_;  // by id
  std::vector<std::string> queue_;   // queued job ids in submission order
  std::map<std::string, int> free_slots_;
  std::map<std::string, int> submitting_;  // by user: submits between the limit check and the queue
  int64_t next_seq_ = 1;

  std::atomic<bool> stop_{false};
  std::condition_variable wake_;
  std::thread poller_;
};

}  // namespace aln::launcher
