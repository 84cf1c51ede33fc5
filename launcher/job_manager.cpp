#include "launcher/job_manager.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/config/input_paths.h"
#include "core/config/job_config.h"
#include "core/json_guard.h"
#include "core/text_escape.h"
#include "google/protobuf/util/json_util.h"
#include "launcher/memory_plan.h"
#include "launcher/launch_command.h"
#include "launcher/process_group.h"
#include "nlohmann/json.hpp"

namespace aln::launcher {
namespace fs = std::filesystem;
using aln::v1::JobState;
using aln::v1::JobStatus;

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// True when something accepts TCP connections at host:port within `timeout_ms`.
bool port_answers(const std::string& host, int port, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  bool ok = false;
  for (addrinfo* a = found; a != nullptr && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int error = 0;
      socklen_t len = sizeof error;
      ok = ::poll(&p, 1, timeout_ms) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
    }
    ::close(fd);
  }
  freeaddrinfo(found);
  return ok;
}

// "h1:2,h2:1" (what JobStatus.hosts holds) -> {(h1, 2), (h2, 1)}.
std::vector<std::pair<std::string, int>> allocation_of(const std::string& hosts) {
  std::vector<std::pair<std::string, int>> out;
  for (absl::string_view part : absl::StrSplit(hosts, ',', absl::SkipEmpty())) {
    const size_t colon = part.rfind(':');
    int slots = 0;
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(part.substr(colon + 1), &slots)) continue;
    out.emplace_back(std::string(part.substr(0, colon)), slots);
  }
  return out;
}

// Writes `text` and fsyncs the file and its folder: the store row that follows names a job whose
// spec must survive a power cut as well as the row does (the store is synchronous=FULL).
absl::Status write_durably(const std::string& path, const std::string& text) {
  auto failed = [&](const char* what) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot ", what, " the job spec: ", std::strerror(errno)));
  };
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return failed("create");
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return failed("write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return failed("fsync");
  }
  ::close(fd);
  const int dir = ::open(fs::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return failed("open the folder of");
  const int rc = ::fsync(dir);
  ::close(dir);
  if (rc != 0) return failed("fsync the folder of");
  return absl::OkStatus();
}

// The cause a job carries from the moment it is taken from the queue until its gate opens.
constexpr const char* kLaunchingCause = "launching";

bool port_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

ProgressTail read_progress_tail(const std::string& path, int64_t offset) {
  ProgressTail out;
  out.offset = offset;
  std::ifstream in(path, std::ios::binary);
  if (!in) return out;
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  if (size < offset) offset = 0;  // trimmed on a resume
  out.offset = offset;
  if (size == offset) return out;
  // Only the newest complete line matters, and a line longer than the window is no progress line:
  // whatever the job wrote since the last read, this costs at most kProgressWindow bytes.
  const int64_t from = std::max(offset, size - kProgressWindow);
  in.seekg(from);
  std::string chunk(static_cast<size_t>(size - from), '\0');
  in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  chunk.resize(static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
  const size_t last_newline = chunk.rfind('\n');
  if (last_newline == std::string::npos) {
    // Half a line: wait for the rest, unless the window is full of it (then skip what was read).
    if (from > offset) out.offset = from;
    return out;
  }
  out.offset = from + static_cast<int64_t>(last_newline + 1);
  chunk.resize(last_newline);  // complete lines only; the newest is the last of them
  const size_t previous = chunk.rfind('\n');
  if (previous == std::string::npos && from > offset) return out;  // its start is before the window
  std::string line = previous == std::string::npos ? chunk : chunk.substr(previous + 1);
  // A hostile line must not cost the launcher more than a linear scan.
  if (check_json_depth(line).ok()) out.line = std::move(line);
  return out;
}

JobManager::JobManager(LauncherConfig config, std::unique_ptr<JobStore> store, MetricsRegistry& metrics, Logger log)
    : config_(std::move(config)), store_(std::move(store)), metrics_(metrics), log_(std::move(log)) {
  for (const Host& h : config_.hosts) free_slots_[h.name] += h.slots;
}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::create(LauncherConfig config, MetricsRegistry& metrics,
                                                               Logger log) {
  std::error_code ec;
  fs::create_directories(fs::path(config.data_dir) / "jobs", ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(config.data_dir, ": cannot create the data directory: ", ec.message(), " (--data-dir)"));
  }
  config.data_dir = fs::absolute(config.data_dir).lexically_normal().string();
  auto store = JobStore::open((fs::path(config.data_dir) / "jobs.sqlite").string());
  if (!store.ok()) return store.status();
  std::unique_ptr<JobManager> manager(new JobManager(std::move(config), std::move(*store), metrics, std::move(log)));
  if (auto s = manager->recover(); !s.ok()) return s;
  manager->poller_ = std::thread([m = manager.get()] { m->poll_loop(); });
  return manager;
}

JobManager::~JobManager() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (poller_.joinable()) poller_.join();
}

std::string JobManager::job_dir(const std::string& job_id) const {
  return (fs::path(config_.data_dir) / "jobs" / job_id).string();
}

absl::Status JobManager::recover() {
  auto records = store_->load_all();
  if (!records.ok()) return records.status();
  std::lock_guard<std::mutex> lock(mu_);
  for (JobRecord& record : *records) {
    next_seq_ = std::max(next_seq_, record.seq + 1);
    Job job;
    job.record = std::move(record);
    auto& status = job.record.status;
    const std::string id = status.job_id();
    const std::string exit_status = (fs::path(job_dir(id)) / "exit_status").string();
    if (status.state() == aln::v1::STARTING && status.cause() == kLaunchingCause &&
        !fs::exists(started_marker(exit_status))) {
      // The launcher died while starting it and nothing of it ran (its gate never opened): end a
      // process still waiting at the gate and queue the job again, so it runs exactly once.
      const auto held = static_cast<pid_t>(job.record.pgid);
      if (leader_alive(held, job.record.start_ticks)) signal_group(held, SIGKILL);
      job.record.pgid = 0;
      job.record.start_ticks = 0;
      job.record.metrics_port = 0;
      status.set_state(aln::v1::QUEUED);
      status.set_hosts("");
      status.set_started_unix_ms(0);
      status.set_metrics_url("");
      status.set_cause("");
      log_.warning("job %s: the launcher stopped while starting it, before it ran; queued again", id);
      if (auto s = store_->put(job.record); !s.ok()) return s;
    } else if (status.state() == aln::v1::STARTING || status.state() == aln::v1::RUNNING) {
      const auto pgid = static_cast<pid_t>(job.record.pgid);
      if (leader_alive(pgid, job.record.start_ticks)) {
        job.reattached = true;
        job.started = std::chrono::steady_clock::now();
        // The slots it holds are taken again.
        for (const auto& [host, slots] : allocation_of(status.hosts())) free_slots_[host] -= slots;
        log_.info("job %s: re-attached to process group %d", id, pgid);
      } else {
        auto code = read_exit_status(exit_status);
        status.set_ended_unix_ms(now_ms());
        status.set_metrics_url("");
        if (code.has_value()) {
          status.set_exit_code(*code);
          status.set_state(*code == 0 ? aln::v1::SUCCEEDED : aln::v1::FAILED);
          status.set_cause(*code == 0 ? "" : absl::StrCat("exited with code ", *code, " while the launcher was down"));
        } else {
          status.set_state(aln::v1::LOST);
          status.set_cause(absl::StrCat("the launcher restarted and process group ", pgid,
                                        " was gone without an exit status (killed with the host?); resubmit the job"));
        }
        log_.warning("job %s: %s after restart: %s", id, aln::v1::JobState_Name(status.state()), status.cause());
        if (auto s = store_->put(job.record); !s.ok()) return s;
      }
    }
    if (status.state() == aln::v1::QUEUED) queue_.push_back(id);
    jobs_.emplace(id, std::move(job));
  }
  update_gauges_locked();
  return absl::OkStatus();
}

absl::StatusOr<JobStatus> JobManager::submit(const aln::v1::SubmitJobRequest& request, const std::string& user) {
  // Validation first, outside the lock: parsing is the slow part of a submit.
  std::string yaml = request.spec_yaml();
  if (yaml.empty()) {
    if (!request.has_spec()) return absl::InvalidArgumentError("spec: empty request: send spec_yaml or spec");
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(request.spec(), &yaml, options).ok()) {
      return absl::InvalidArgumentError("spec: cannot be converted for validation");
    }
  }
  auto loaded = aln::config::load_job_text(yaml, "submitted job");
  if (!loaded.ok()) return absl::InvalidArgumentError(loaded.status().message());
  // Refused here with the key path, and rebased by the job itself (aln train under ALN_OUTPUT_DIR).
  if (absl::Status confined = aln::config::confine_written_paths(&*loaded, "run"); !confined.ok()) {
    return absl::InvalidArgumentError(confined.message());
  }
  const aln::v1::JobSpec& spec = loaded->spec;
  const int world = config::job_world_size(spec);
  int pool = 0;
  for (const Host& h : config_.hosts) pool += h.slots;
  if (world > pool) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.policy.data_parallel: the job needs ", world, " processes but the launcher's pool has ",
                     pool, " slots (", format_hosts(config_.hosts), "); lower the parallel sizes or add hosts"));
  }
  std::string workdir = request.workdir();
  if (!workdir.empty()) {
    std::error_code ec;
    if (!fs::path(workdir).is_absolute() || !fs::is_directory(workdir, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("workdir: '", workdir, "' is not an absolute path of a directory on the launcher's host"));
    }
  }
  // Relative inputs resolve against the job's working directory: the given one, else its own folder
  // (named once the id is taken; any name under jobs/ resolves alike for the check).
  const std::string reads_from = workdir.empty() ? job_dir("job-new") : workdir;
  if (absl::Status readable = aln::config::confine_read_paths(*loaded, reads_from, input_dirs_for(config_, user));
      !readable.ok()) {
    return absl::PermissionDeniedError(readable.message());
  }
  if (config_.slot_memory_gib > 0) {
    // A model directory that cannot be read here is left to the job (it fails there with the path).
    auto estimate = policy_state_per_rank(spec, reads_from);
    if (estimate.ok()) {
      absl::Status fits = check_policy_fits(*estimate, config_.slot_memory_gib * 1024.0 * 1024 * 1024, spec);
      if (!fits.ok()) return fits;
    }
  }
  std::vector<std::string> methods;
  for (const auto& stage : aln::config::effective_stages(spec))
    methods.push_back(aln::config::method_name(stage.trainer()));

  // The id is taken under the lock; the folder and the fsync'ed spec are written outside it, so
  // other clients do not wait for the disk. A failure leaves a gap in the ids, nothing else.
  Job job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (config_.max_jobs_per_user > 0) {
      int active = 0;
      for (const auto& [other_id, other] : jobs_) {
        active += other.record.status.user() == user && !is_terminal(other.record.status.state());
      }
      active += submitting_[user];
      if (active >= config_.max_jobs_per_user) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "user ", escape_for_log(user), " has ", active, " jobs queued or running, the most this launcher allows (",
            "--max-jobs-per-user ", config_.max_jobs_per_user, "); wait for some to end or cancel some"));
      }
    }
    job.record.seq = next_seq_++;
    ++submitting_[user];  // counted against the limit until it is queued or has failed
  }
  bool counted = true;
  absl::Cleanup uncount = [&] {
    if (!counted) return;
    std::lock_guard<std::mutex> lock(mu_);
    --submitting_[user];
  };
  const std::string id = absl::StrFormat("job-%06d", job.record.seq);
  const std::string dir = job_dir(id);
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "run", ec);
  if (ec) return absl::UnavailableError(absl::StrCat(dir, ": cannot create the job directory: ", ec.message()));
  if (workdir.empty()) workdir = dir;
  const std::string spec_path = (fs::path(dir) / "job.yaml").string();
  if (absl::Status written = write_durably(spec_path, yaml); !written.ok()) return written;
  std::lock_guard<std::mutex> lock(mu_);
  --submitting_[user];
  counted = false;
  job.record.spec_yaml = yaml;
  job.record.workdir = workdir;
  JobStatus& status = job.record.status;
  status.set_job_id(id);
  status.set_name(spec.name());
  status.set_user(user);
  status.set_state(aln::v1::QUEUED);
  status.set_submitted_unix_ms(now_ms());
  status.set_world_size(world);
  status.set_run_dir((fs::path(dir) / "run").string());
  status.set_log_path((fs::path(dir) / "job.log").string());
  status.set_methods(absl::StrJoin(methods, ","));
  if (auto s = store_->put(job.record); !s.ok()) return s;  // durable before it is acknowledged
  queue_.push_back(id);
  auto& stored = jobs_.emplace(id, std::move(job)).first->second;
  metrics_.counter("aln_launcher_jobs_submitted_total", "Jobs accepted by SubmitJob").Increment();
  log_.info("job %s (%s, %s, %d processes) queued by %s", id, spec.name(), stored.record.status.methods(), world, user);
  update_gauges_locked();
  wake_.notify_all();
  return snapshot_locked(stored);
}

JobStatus JobManager::snapshot_locked(const Job& job) const {
  JobStatus status = job.record.status;
  if (status.state() == aln::v1::QUEUED) {
    auto it = std::find(queue_.begin(), queue_.end(), status.job_id());
    status.set_queue_position(static_cast<int>(it - queue_.begin()));
  }
  return status;
}

absl::StatusOr<const JobManager::Job*> JobManager::readable_locked(const std::string& job_id,
                                                                   const Principal& who) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    return absl::NotFoundError(
        absl::StrCat("job_id: no job '", escape_for_log(job_id), "'; `alnctl list` shows the jobs"));
  }
  if (!who.admin && it->second.record.status.user() != who.user) {
    return absl::PermissionDeniedError(
        absl::StrCat("job ", job_id, " belongs to another user; only its owner or an admin may see it"));
  }
  return &it->second;
}

absl::StatusOr<JobStatus> JobManager::get(const std::string& job_id, const Principal& who) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto job = readable_locked(job_id, who);
  if (!job.ok()) return job.status();
  return snapshot_locked(**job);
}

absl::StatusOr<aln::v1::ListJobsResponse> JobManager::list(const aln::v1::ListJobsRequest& request,
                                                           const Principal& who) const {
  constexpr int kDefaultPage = 500, kMaxPage = 1000;
  if (!who.admin && !request.user().empty() && request.user() != who.user) {
    return absl::PermissionDeniedError("user: only an admin may list another user's jobs");
  }
  if (request.page_size() < 0 || request.page_size() > kMaxPage) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: ", request.page_size(), " is out of range: 0 (", kDefaultPage, ") to ", kMaxPage));
  }
  const int page = request.page_size() == 0 ? kDefaultPage : request.page_size();
  const std::string& user = who.admin ? request.user() : who.user;
  aln::v1::ListJobsResponse out;
  std::lock_guard<std::mutex> lock(mu_);
  // Ids order the map and the token is the last id sent, so a page starts right after it even
  // when jobs were added or ended in between.
  auto it = request.page_token().empty() ? jobs_.begin() : jobs_.upper_bound(request.page_token());
  for (; it != jobs_.end(); ++it) {
    const auto& s = it->second.record.status;
    if (!user.empty() && s.user() != user) continue;
    if (request.states_size() > 0 &&
        std::find(request.states().begin(), request.states().end(), s.state()) == request.states().end()) {
      continue;
    }
    if (out.jobs_size() == page) {
      out.set_next_page_token(out.jobs(page - 1).job_id());
      break;
    }
    *out.add_jobs() = snapshot_locked(it->second);
  }
  return out;
}

absl::StatusOr<JobStatus> JobManager::cancel(const std::string& job_id, const Principal& who) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job_id: no job '", job_id, "'"));
  Job& job = it->second;
  auto& status = job.record.status;
  if (!who.admin && status.user() != who.user) {
    return absl::PermissionDeniedError(
        absl::StrCat("job ", job_id, " belongs to ", status.user(), "; only its owner or an admin may cancel it"));
  }
  if (is_terminal(status.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ended (", aln::v1::JobState_Name(status.state()), ")"));
  }
  if (status.state() == aln::v1::QUEUED) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), job_id), queue_.end());
    finish_locked(job, aln::v1::CANCELLED, 0, absl::StrCat("cancelled by ", who.user, " while queued"));
    return snapshot_locked(job);
  }
  if (!job.cancel_requested) {
    job.cancel_requested = true;
    job.cancelled_by = who.user;
    job.kill_at = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(config_.cancel_grace_s * 1000));
    signal_group(static_cast<pid_t>(job.record.pgid), SIGTERM);
    status.set_cause(absl::StrCat("cancel requested by ", who.user, "; SIGTERM sent"));
    persist_locked(job);
    log_.info("job %s: cancel requested by %s, SIGTERM to process group %d", job_id, who.user, job.record.pgid);
  }
  wake_.notify_all();
  return snapshot_locked(job);
}

absl::StatusOr<std::pair<std::string, bool>> JobManager::log_of(const std::string& job_id, const Principal& who) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto job = readable_locked(job_id, who);
  if (!job.ok()) return job.status();
  const auto& s = (*job)->record.status;
  return std::make_pair(s.log_path(), is_terminal(s.state()));
}

std::string JobManager::service_discovery_json() const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& [id, job] : jobs_) {
    const auto& s = job.record.status;
    if ((s.state() != aln::v1::RUNNING && s.state() != aln::v1::STARTING) || s.metrics_url().empty()) continue;
    std::string target = s.metrics_url();
    if (target.rfind("http://", 0) == 0) target = target.substr(7);
    if (const size_t slash = target.find('/'); slash != std::string::npos) target.resize(slash);
    groups.push_back({{"targets", {target}},
                      {"labels",
                       {{"aln_job_id", id},
                        {"aln_job_name", s.name()},
                        {"aln_user", s.user()},
                        {"aln_methods", s.methods()},
                        {"aln_world_size", std::to_string(s.world_size())}}}});
  }
  return groups.dump();
}

void JobManager::poll_loop() {
  const auto interval = std::chrono::milliseconds(static_cast<int64_t>(config_.poll_interval_s * 1000));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    poll_once();
    lock.lock();
    wake_.wait_for(lock, interval, [this] { return stop_.load(); });
  }
}

void JobManager::poll_once() {
  std::vector<std::string> to_start;
  std::vector<Probe> probes;
  struct Read {
    std::string job_id;
    std::string path;
    int64_t offset = 0;
    ProgressTail tail;
  };
  std::vector<Read> reads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : jobs_) {
      const auto state = job.record.status.state();
      if ((state == aln::v1::STARTING || state == aln::v1::RUNNING) && !job.launching) {
        check_running_locked(job);
        // Serving /metrics yet? Asked below, outside the lock (it may resolve a host name).
        const auto& s = job.record.status;
        if (s.state() == aln::v1::STARTING && !s.metrics_url().empty()) {
          probes.push_back({id, s.metrics_url().substr(7, s.metrics_url().rfind(':') - 7), job.record.metrics_port});
        }
        reads.push_back({id, (fs::path(s.run_dir()) / "train_log.jsonl").string(), job.record.progress_offset, {}});
      }
    }
    schedule_locked(&to_start);
    update_gauges_locked();
  }
  // The job writes train_log.jsonl: it is read with no lock held, and only its tail. A job whose
  // leader ended was reaped above, before this read, so its last lines are in it.
  for (Read& r : reads) r.tail = read_progress_tail(r.path, r.offset);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Read& r : reads) {
      auto it = jobs_.find(r.job_id);
      if (it == jobs_.end() || is_terminal(it->second.record.status.state())) continue;
      Job& job = it->second;
      if (job.record.progress_offset == r.offset) {
        job.record.progress_offset = r.tail.offset;
        if (r.tail.line.has_value()) apply_progress_locked(job, *r.tail.line);
      }
      if (job.ended.has_value()) {
        finish_ended_locked(job);
      } else if (job.record.status.state() == aln::v1::STARTING && job.record.status.step() > 0) {
        job.record.status.set_state(aln::v1::RUNNING);  // running once it reports a step
        persist_locked(job);
      }
    }
    update_gauges_locked();
  }
  for (const std::string& id : to_start) launch(id);
  for (const Probe& p : probes) {
    if (!port_answers(p.host, p.port, 50)) continue;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(p.job_id);
    if (it != jobs_.end() && it->second.record.status.state() == aln::v1::STARTING) {
      it->second.record.status.set_state(aln::v1::RUNNING);
      persist_locked(it->second);
    }
  }
}

void JobManager::schedule_locked(std::vector<std::string>* to_start) {
  // Strict FIFO: the head of the queue waits for its slots, later jobs do not overtake it.
  while (!queue_.empty()) {
    Job& job = jobs_.at(queue_.front());
    int needed = job.record.status.world_size();
    int available = 0;
    for (const auto& [host, free] : free_slots_) available += free;
    if (needed > available) return;
    std::vector<std::string> parts;
    for (const Host& h : config_.hosts) {
      int& free = free_slots_[h.name];
      const int take = std::min(free, needed);
      if (take <= 0) continue;
      free -= take;
      needed -= take;
      parts.push_back(absl::StrCat(h.name, ":", take));
      if (needed == 0) break;
    }
    auto& status = job.record.status;
    status.set_hosts(absl::StrJoin(parts, ","));
    queue_.erase(queue_.begin());
    // Recorded before any process exists: a launcher that dies from here until the gate opens
    // leaves a record a restart recognises as "never ran" and queues again (see recover()).
    job.launching = true;
    job.record.pgid = 0;
    job.record.start_ticks = 0;
    job.record.metrics_port = pick_metrics_port_locked();
    status.set_state(aln::v1::STARTING);
    status.set_cause(kLaunchingCause);
    status.set_started_unix_ms(now_ms());
    persist_locked(job);
    to_start->push_back(status.job_id());
  }
}

int JobManager::pick_metrics_port_locked() const {
  std::vector<int> used;
  for (const auto& [id, job] : jobs_) {
    if (!is_terminal(job.record.status.state()) && job.record.metrics_port > 0) used.push_back(job.record.metrics_port);
  }
  for (int i = 0; i < config_.job_metrics_port_count; ++i) {
    const int port = config_.job_metrics_port_base + i;
    if (std::find(used.begin(), used.end(), port) == used.end() && port_free(port)) return port;
  }
  return 0;  // the job picks a free port itself; it is then not discoverable
}

std::string JobManager::metrics_url(const JobRecord& record) const {
  if (record.metrics_port <= 0) return "";
  const auto spec = aln::config::load_job_text(record.spec_yaml, "job");
  if (!spec.ok() || !spec->spec.metrics().enabled()) return "";
  // The target is the host rank 0 runs on, from the pool: the spec's metrics.host only says where
  // the job binds, and must not point Prometheus at an address of the submitter's choosing. A
  // loopback bind is kept as it is when that host is this one.
  const std::string& hosts = record.status.hosts();
  const std::string first_host = hosts.substr(0, hosts.find(':'));
  const std::string& bind = spec->spec.metrics().host();
  const bool local = first_host == "localhost" || is_loopback_address(first_host);
  const std::string target = local && is_loopback_address(bind) ? bind : first_host;
  return absl::StrCat("http://", target, ":", record.metrics_port, "/metrics");
}

void JobManager::launch(const std::string& id) {
  // Parsing, the log header and fork run outside the lock: other clients are not held up by a
  // slow start. The job record is this function's until it clears `launching`.
  JobRecord record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    record = jobs_.at(id).record;
  }
  const auto& status = record.status;
  const std::string dir = job_dir(id);
  auto fail = [&](const absl::Status& why) {
    std::lock_guard<std::mutex> lock(mu_);
    Job& job = jobs_.at(id);
    job.launching = false;
    finish_locked(job, aln::v1::FAILED, -1, std::string(why.message()));
  };
  const std::map<std::string, std::string> values = {{"aln", config_.aln_binary},
                                                     {"spec", (fs::path(dir) / "job.yaml").string()},
                                                     {"np", std::to_string(status.world_size())},
                                                     {"hosts", status.hosts()},
                                                     {"job_id", id},
                                                     {"run_dir", status.run_dir()}};
  const std::string templ =
      config_.launch_template.empty() ? default_launch_template(status.world_size()) : config_.launch_template;
  auto argv = expand_launch_template(templ, values);
  if (!argv.ok()) return fail(argv.status());
  std::map<std::string, std::string> env = {{"ALN_OUTPUT_DIR", status.run_dir()},
                                            {"ALN_METRICS_PORT", std::to_string(record.metrics_port)},
                                            {"ALN_JOB_ID", id}};
  if (::geteuid() == 0) {  // mpirun refuses root without these; the launcher runs jobs as itself
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
  }
  const std::string url = metrics_url(record);
  {
    std::ofstream header(status.log_path(), std::ios::app);
    header << "aln-launcher: starting " << id << " in " << escape_for_log(record.workdir) << ":";
    for (const auto& w : *argv) header << ' ' << escape_for_log(w);
    header << '\n';
  }
  const std::string exit_status = (fs::path(dir) / "exit_status").string();
  std::error_code ignored;
  fs::remove(started_marker(exit_status), ignored);  // from a start a restart undid
  auto spawned = spawn_held(*argv, env, record.workdir, status.log_path(), exit_status);
  if (!spawned.ok()) return fail(spawned.status());
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Job& job = jobs_.at(id);
    job.record.pgid = spawned->pid;
    job.record.start_ticks = spawned->start_ticks;
    job.started = std::chrono::steady_clock::now();
    job.record.status.set_metrics_url(url);
    persist_locked(job);  // the process group is on disk before anything of the job runs
    cancelled = job.cancel_requested;
  }
  if (!cancelled && config_.test_start_hold_s > 0) {  // tests: widen the window a crash may hit
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(config_.test_start_hold_s * 1000)));
  }
  if (cancelled) {
    abandon(*spawned);
  } else if (absl::Status released = release(*spawned); !released.ok()) {
    return fail(released);
  }
  std::lock_guard<std::mutex> lock(mu_);
  Job& job = jobs_.at(id);
  job.launching = false;
  if (cancelled) {
    finish_locked(job, aln::v1::CANCELLED, 0, absl::StrCat("cancelled by ", job.cancelled_by, " while starting"));
    return;
  }
  if (job.record.status.cause() == kLaunchingCause) job.record.status.set_cause("");
  persist_locked(job);
  log_.info("job %s: started, process group %d on %s", id, spawned->pid, job.record.status.hosts());
}

void JobManager::check_running_locked(Job& job) {
  auto& status = job.record.status;
  const auto pgid = static_cast<pid_t>(job.record.pgid);
  if (job.ended.has_value()) return;
  if (job.reattached) {
    if (!leader_alive(pgid, job.record.start_ticks)) {
      auto code = read_exit_status((fs::path(job_dir(status.job_id())) / "exit_status").string());
      job.ended = code.has_value() ? (*code << 8) : -1;
    }
  } else {
    job.ended = try_reap(pgid);
  }
  if (job.ended.has_value()) {
    // The leader ended: whatever of the group is left (a stray rank) goes with it. The job is
    // finished by poll_once after its last progress lines are read.
    signal_group(pgid, SIGKILL);
    return;
  }
  if (job.cancel_requested && !job.killed && std::chrono::steady_clock::now() >= job.kill_at) {
    signal_group(pgid, SIGKILL);
    job.killed = true;
    status.set_cause(absl::StrCat("cancel requested by ", job.cancelled_by, "; SIGKILL after the grace period"));
    persist_locked(job);
    log_.warning("job %s: still running %.1f s after SIGTERM; SIGKILL", status.job_id(), config_.cancel_grace_s);
  }
}

void JobManager::finish_ended_locked(Job& job) {
  const int wait_status = *job.ended;
  if (job.cancel_requested) {
    finish_locked(job, aln::v1::CANCELLED, 0, absl::StrCat("cancelled by ", job.cancelled_by));
  } else if (wait_status == -1) {
    finish_locked(job, aln::v1::LOST, -1, "the job's processes ended without an exit status (killed externally?)");
  } else {
    auto [code, cause] = describe_wait_status(wait_status);
    finish_locked(job, code == 0 ? aln::v1::SUCCEEDED : aln::v1::FAILED, code, cause);
  }
}

void JobManager::apply_progress_locked(Job& job, const std::string& line) {
  auto parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) return;
  auto& status = job.record.status;
  if (parsed.contains("global_step") && parsed["global_step"].is_number()) {
    status.set_step(parsed["global_step"].get<int64_t>());
  }
  if (parsed.contains("loss") && parsed["loss"].is_number()) status.set_loss(parsed["loss"].get<double>());
  if (parsed.contains("stage") && parsed["stage"].is_string()) status.set_stage(parsed["stage"].get<std::string>());
  auto& summary = *status.mutable_metrics();
  summary.clear();
  for (const char* key : {"tokens_per_second", "grad_norm", "lr"}) {
    if (parsed.contains(key) && parsed[key].is_number()) summary[key] = parsed[key].get<double>();
  }
  if (parsed.contains("metrics") && parsed["metrics"].is_object()) {
    for (const auto& [k, v] : parsed["metrics"].items()) {
      if (v.is_number()) summary[k] = v.get<double>();
    }
  }
  persist_locked(job);
}

void JobManager::finish_locked(Job& job, JobState state, int exit_code, std::string cause) {
  auto& status = job.record.status;
  const auto previous = status.state();
  status.set_state(state);
  status.set_exit_code(exit_code);
  status.set_cause(std::move(cause));
  status.set_ended_unix_ms(now_ms());
  status.set_metrics_url("");
  if (previous == aln::v1::STARTING || previous == aln::v1::RUNNING) {
    for (const auto& [host, slots] : allocation_of(status.hosts())) free_slots_[host] += slots;
  }
  persist_locked(job);
  metrics_
      .counter("aln_launcher_jobs_ended_total", "Jobs that reached a final state",
               {{"state", aln::v1::JobState_Name(state)}})
      .Increment();
  log_.info("job %s: %s%s%s", status.job_id(), aln::v1::JobState_Name(state), status.cause().empty() ? "" : ": ",
            status.cause());
  wake_.notify_all();
}

void JobManager::persist_locked(const Job& job) {
  if (auto s = store_->put(job.record); !s.ok()) {
    log_.error("job %s: %s (the state lives on in memory; it is written again with the next change)",
               job.record.status.job_id(), std::string(s.message()));
  }
}

void JobManager::update_gauges_locked() {
  std::map<JobState, int> counts;
  for (const auto& [id, job] : jobs_) ++counts[job.record.status.state()];
  for (int s = aln::v1::QUEUED; s <= aln::v1::LOST; ++s) {
    metrics_
        .gauge("aln_launcher_jobs", "Jobs known to the launcher by state",
               {{"state", aln::v1::JobState_Name(static_cast<JobState>(s))}})
        .Set(counts[static_cast<JobState>(s)]);
  }
  metrics_.gauge("aln_launcher_queue_depth", "Jobs waiting for slots").Set(static_cast<double>(queue_.size()));
  int free = 0;
  for (const auto& [host, n] : free_slots_) free += n;
  metrics_.gauge("aln_launcher_free_slots", "Slots of the resource pool not held by a job").Set(free);
}

}  // namespace aln::launcher
