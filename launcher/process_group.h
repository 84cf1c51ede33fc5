#pragma once
// Starting a job's command in its own session and process group, and watching and signalling that
// group. The command runs under `/bin/sh`, which writes the command's exit status to a file: a
// restarted launcher (no longer the parent) still learns how a job it re-attached to ended.
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aln::launcher {

struct Spawned {
  pid_t pid = 0;            // the group leader; also the process group id
  int64_t start_ticks = 0;  // its start time in clock ticks since boot
  int gate_fd = -1;         // spawn_held: write end of the gate, until release() or abandon()
  int error_fd = -1;        // spawn_held: the child's exec report
  std::string workdir;
};

// A child that found its gate closed (the launcher died before release) exits with this code
// without running anything and without an exit-status file.
inline constexpr int kGateClosedExit = 125;

// Forks the job's process: a new session (the job's process group), stdout and stderr appended to
// `log_path`, only descriptors 0-2 kept across exec. The child waits at a gate: nothing of `argv`
// runs until release(), so the caller can record the process group durably first. Once through
// the gate it creates started_marker(exit_status_path), changes to `workdir` and runs `argv` under
// the exit-status wrapper with the launcher's environment plus `env`.
absl::StatusOr<Spawned> spawn_held(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                                   const std::string& workdir, const std::string& log_path,
                                   const std::string& exit_status_path);
// Opens the gate and waits until the command is exec'ed; FailedPrecondition when it could not be
// (the working directory is missing, ...), after reaping the child.
absl::Status release(Spawned& spawned);
// Keeps the gate shut: the child exits without running anything; reaped here.
void abandon(Spawned& spawned);
// The file a job's child creates once it passed its gate: without it, the job never ran.
std::string started_marker(const std::string& exit_status_path);

// spawn_held + release.
absl::StatusOr<Spawned> spawn_process_group(const std::vector<std::string>& argv,
                                            const std::map<std::string, std::string>& env, const std::string& workdir,
                                            const std::string& log_path, const std::string& exit_status_path);

// The start time of a live, non-zombie process, or nullopt.
std::optional<int64_t> process_start_ticks(pid_t pid);

// True while the leader `pid` (started at `start_ticks`) is alive and not a zombie; false when the
// start time is unknown (0), since a reused pid could not be told apart.
bool leader_alive(pid_t pid, int64_t start_ticks);

// kill(-pgid, signal); quietly ignores a group that is already gone.
void signal_group(pid_t pgid, int signal);

// True while any process of the group exists (zombies included: they hold the group until reaped).
bool group_exists(pid_t pgid);

// Reaps our own child without blocking: the wait status when it ended, nullopt while it runs.
std::optional<int> try_reap(pid_t pid);

// The exit status the wrapper wrote, nullopt when it wrote none (killed by a signal, or lost).
std::optional<int> read_exit_status(const std::string& path);

// Turns a wait status into (exit code, cause): 0 and "" on success.
std::pair<int, std::string> describe_wait_status(int status);

}  // namespace aln::launcher
