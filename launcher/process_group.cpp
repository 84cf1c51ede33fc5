#include "launcher/process_group.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace aln::launcher {
namespace {

// The wrapper: "$0" is the exit-status file, "$@" the job's command. It outlives a SIGTERM to the
// group (trapped, not ignored: an ignored signal would be inherited by the job) so the job's own
// shutdown decides when the job ends, and the grace period before SIGKILL means something. It
// waits until the command has really ended (a trapped signal interrupts `wait`), then writes the
// status to a temp file that is renamed, so a reader never sees half a number.
constexpr const char* kWrapper =
    "\"$@\" <&0 & child=$!; trap ': ' TERM INT HUP; "
    "while :; do wait $child; code=$?; kill -0 $child 2>/dev/null || break; done; "
    "echo $code > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"; exit $code";

}  // namespace

absl::StatusOr<Spawned> spawn_held(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                                   const std::string& workdir, const std::string& log_path,
                                   const std::string& exit_status_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  // Everything the child needs is built before fork: after fork only async-signal-safe calls.
  std::vector<std::string> args = {"/bin/sh", "-c", kWrapper, exit_status_path};
  args.insert(args.end(), argv.begin(), argv.end());
  std::vector<char*> c_args;
  for (auto& a : args) c_args.push_back(a.data());
  c_args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    if (env.count(key) == 0) env_strings.push_back(entry);
  }
  for (const auto& [k, v] : env) env_strings.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> c_env;
  for (auto& e : env_strings) c_env.push_back(e.data());
  c_env.push_back(nullptr);
  const std::string started_path = started_marker(exit_status_path);

  // The highest descriptor the child may have inherited, for the fallback below (computed here:
  // getrlimit is fine after fork, but keep the child's work minimal).
  rlimit files{};
  const int max_fd = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                         ? static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20))
                         : 1 << 16;
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return absl::InternalError(absl::StrCat(log_path, ": cannot open the job log: ", std::strerror(errno)));
  int error_pipe[2];  // the child reports a failed chdir/exec through it (closed on exec = success)
  // The parent opens the gate by sending a byte; EOF (the parent died) ends the child. A socket,
  // not a pipe: send(MSG_NOSIGNAL) to a child killed at the gate must not raise SIGPIPE here.
  int gate_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, gate_pipe) != 0) {
    ::close(log_fd);
    ::close(error_pipe[0]);
    ::close(error_pipe[1]);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {log_fd, error_pipe[0], error_pipe[1], gate_pipe[0], gate_pipe[1]}) ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    ::close(error_pipe[0]);
    ::close(gate_pipe[1]);
    ::setsid();
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    // The job gets stdin, stdout and stderr only: descriptors the launcher inherited (a lock held
    // by whoever started it, a socket) must not stay open in every job. Close-on-exec rather than
    // close, so the two pipes still work until execve.
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    // Default signal handling for the job whatever the launcher blocks or ignores.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    // Held until the launcher has recorded this process group. If the launcher dies first, the
    // gate reads EOF and nothing of the job runs: a restart may start it again without a copy.
    char go = 0;
    ssize_t got;
    do {
      got = ::read(gate_pipe[0], &go, 1);
    } while (got < 0 && errno == EINTR);
    if (got != 1) ::_exit(kGateClosedExit);
    const int marker = ::open(started_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (marker >= 0) ::close(marker);
    int error = 0;
    if (::chdir(workdir.c_str()) != 0) {
      error = errno;
    } else {
      ::execve(c_args[0], c_args.data(), c_env.data());
      error = errno;
    }
    ssize_t ignored = ::write(error_pipe[1], &error, sizeof error);
    (void)ignored;
    ::_exit(127);
  }
  ::close(log_fd);
  ::close(error_pipe[1]);
  ::close(gate_pipe[0]);
  Spawned spawned;
  spawned.pid = pid;
  // Read while the child waits at the gate: it cannot have ended, so the start time is there.
  spawned.start_ticks = process_start_ticks(pid).value_or(0);
  spawned.gate_fd = gate_pipe[1];
  spawned.error_fd = error_pipe[0];
  spawned.workdir = workdir;
  return spawned;
}

absl::Status release(Spawned& spawned) {
  const char go = 1;
  ssize_t n;
  do {
    n = ::send(spawned.gate_fd, &go, 1, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  ::close(spawned.gate_fd);
  spawned.gate_fd = -1;
  int child_error = 0;
  do {
    n = ::read(spawned.error_fd, &child_error, sizeof child_error);
  } while (n < 0 && errno == EINTR);
  ::close(spawned.error_fd);
  spawned.error_fd = -1;
  if (n == static_cast<ssize_t>(sizeof child_error)) {
    int status = 0;
    ::waitpid(spawned.pid, &status, 0);
    return absl::FailedPreconditionError(absl::StrCat("cannot start the job in '", spawned.workdir,
                                                      "': ", std::strerror(child_error),
                                                      "; the working directory must exist on the launcher's host"));
  }
  return absl::OkStatus();
}

void abandon(Spawned& spawned) {
  for (int* fd : {&spawned.gate_fd, &spawned.error_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  int status = 0;
  ::waitpid(spawned.pid, &status, 0);  // it exits at once: the gate read EOF
}

std::string started_marker(const std::string& exit_status_path) { return exit_status_path + ".started"; }

absl::StatusOr<Spawned> spawn_process_group(const std::vector<std::string>& argv,
                                            const std::map<std::string, std::string>& env, const std::string& workdir,
                                            const std::string& log_path, const std::string& exit_status_path) {
  auto spawned = spawn_held(argv, env, workdir, log_path, exit_status_path);
  if (!spawned.ok()) return spawned.status();
  if (absl::Status s = release(*spawned); !s.ok()) return s;
  return spawned;
}

std::optional<int64_t> process_start_ticks(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) may contain spaces and parentheses: fields after the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  std::string state;
  rest >> state;  // field 3
  if (state == "Z" || state == "X") return std::nullopt;
  for (int i = 4; i <= 22; ++i) {
    if (!(rest >> field)) return std::nullopt;
  }
  int64_t ticks = 0;
  if (!absl::SimpleAtoi(field, &ticks)) return std::nullopt;
  return ticks;
}

bool leader_alive(pid_t pid, int64_t start_ticks) {
  // Without a recorded start time the pid alone cannot tell the job from a process that reused it.
  if (pid <= 1 || start_ticks == 0) return false;
  auto ticks = process_start_ticks(pid);
  return ticks.has_value() && *ticks == start_ticks;
}

void signal_group(pid_t pgid, int signal) {
  if (pgid > 1) ::kill(-pgid, signal);
}

bool group_exists(pid_t pgid) { return pgid > 1 && (::kill(-pgid, 0) == 0 || errno == EPERM); }

std::optional<int> try_reap(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == pid) return status;
  if (r < 0 && errno == ECHILD) return 0;  // not ours (re-attached) or already reaped
  return std::nullopt;
}

std::optional<int> read_exit_status(const std::string& path) {
  std::ifstream in(path);
  int code = 0;
  if (in >> code) return code;
  return std::nullopt;
}

std::pair<int, std::string> describe_wait_status(int status) {
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    if (code == 0) return {0, ""};
    if (code > 128 && code < 128 + 65) {  // the wrapper reports a signal-killed command as 128+N
      return {code, absl::StrCat("killed by signal ", code - 128, " (", strsignal(code - 128), ")")};
    }
    return {code, absl::StrCat("exited with code ", code, code == 2 ? " (bad input: see the log)" : "; see the log")};
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return {128 + sig, absl::StrCat("killed by signal ", sig, " (", strsignal(sig), ")")};
  }
  return {-1, "ended in an unknown way"};
}

}  // namespace aln::launcher
