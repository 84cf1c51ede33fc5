#include "launcher/process_group.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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

absl::StatusOr<Spawned> spawn_process_group(const std::vector<std::string>& argv,
                                            const std::map<std::string, std::string>& env, const std::string& workdir,
                                            const std::string& log_path, const std::string& exit_status_path) {
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

  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return absl::InternalError(absl::StrCat(log_path, ": cannot open the job log: ", std::strerror(errno)));
  int pipe_fds[2];  // the child reports a failed chdir/exec through it (closed on exec = success)
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    ::close(pipe_fds[0]);
    ::setsid();
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    // Default signal handling for the job whatever the launcher blocks or ignores.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    int error = 0;
    if (::chdir(workdir.c_str()) != 0) {
      error = errno;
    } else {
      ::execve(c_args[0], c_args.data(), c_env.data());
      error = errno;
    }
    ssize_t ignored = ::write(pipe_fds[1], &error, sizeof error);
    (void)ignored;
    ::_exit(127);
  }
  ::close(log_fd);
  ::close(pipe_fds[1]);
  int child_error = 0;
  ssize_t n;
  do {
    n = ::read(pipe_fds[0], &child_error, sizeof child_error);
  } while (n < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  if (n == static_cast<ssize_t>(sizeof child_error)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return absl::FailedPreconditionError(absl::StrCat("cannot start the job in '", workdir,
                                                      "': ", std::strerror(child_error),
                                                      "; the working directory must exist on the launcher's host"));
  }
  Spawned spawned;
  spawned.pid = pid;
  spawned.start_ticks = process_start_ticks(pid).value_or(0);
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
  auto ticks = process_start_ticks(pid);
  return ticks.has_value() && (start_ticks == 0 || *ticks == start_ticks);
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
