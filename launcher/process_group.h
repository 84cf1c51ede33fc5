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
};

// Forks, starts a new session (the job's process group), changes to `workdir`, sends stdout and
// stderr to `log_path` (appending) and runs `argv` with the launcher's environment plus `env`.
absl::StatusOr<Spawned> spawn_process_group(const std::vector<std::string>& argv,
                                            const std::map<std::string, std::string>& env, const std::string& workdir,
                                            const std::string& log_path, const std::string& exit_status_path);

// The start time of a live, non-zombie process, or nullopt.
std::optional<int64_t> process_start_ticks(pid_t pid);

// True while the leader `pid` (started at `start_ticks`) is alive and not a zombie.
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
