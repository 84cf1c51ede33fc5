#pragma once
// The launcher's settings (command-line flags) and the parts of them that need parsing: the
// resource pool ("host:slots,...") and the bearer-token file.
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aln::launcher {

struct Host {
  std::string name;
  int slots = 1;
};

struct Principal {
  std::string user;
  bool admin = false;
};

struct LauncherConfig {
  std::string listen = "127.0.0.1:50051";   // gRPC address; loopback unless told otherwise
  std::string http_listen = "127.0.0.1:9480";  // /metrics (the launcher's own) and /sd (job targets)
  std::string data_dir = "launcher-data";   // SQLite store, job directories and logs
  std::vector<Host> hosts;                  // the resource pool
  std::string aln_binary;                   // `aln` started for each job
  // How a job is started. Words split on spaces, placeholders replaced: {aln} {spec} {np} {hosts}
  // {job_id} {run_dir}. Empty: `{aln} train {spec}` for one process, mpirun for more.
  std::string launch_template;
  std::string tokens_file;  // empty: no authentication (loopback development use)
  std::string tls_cert;     // both set: TLS
  std::string tls_key;
  double cancel_grace_s = 10;  // SIGTERM, then SIGKILL after this long
  int max_message_bytes = 4 << 20;
  int job_metrics_port_base = 9500;  // jobs' /metrics ports: base, base+1, ...
  int job_metrics_port_count = 100;
  // Directories jobs may read (model, tokenizer, data paths), "{user}" standing for the submitting
  // user; empty: whatever the launcher's own user can read (docs/launcher.md, "Security model").
  std::vector<std::string> input_dirs;
  int max_jobs_per_user = 1000;  // queued, starting or running at once (0: no limit)
  // Memory one slot offers a process (a GPU's memory, or a CPU host's share per slot), in GiB; a job
  // whose policy training state per rank cannot fit is refused at submit (launcher/memory_plan.h).
  // 0: no check.
  double slot_memory_gib = 0;
  double poll_interval_s = 0.2;  // how often running jobs' processes and progress are checked
  // Tests only (--test-start-hold-s): how long a job waits at its gate after its process group is
  // recorded, so a test can kill the launcher inside the start window.
  double test_start_hold_s = 0;
};

// "h1:4,h2:4" or "localhost" (slots 1). Errors name the entry.
absl::StatusOr<std::vector<Host>> parse_hosts(const std::string& text);
std::string format_hosts(const std::vector<Host>& hosts);

// True for 127.x.y.z, localhost and ::1 (with or without ":PORT"); 0.0.0.0 and names are not.
bool is_loopback_address(const std::string& address);

// One principal per line: `TOKEN USER [admin]`; '#' starts a comment. Errors name file:line.
absl::StatusOr<std::map<std::string, Principal>> load_tokens(const std::string& path);

// config.input_dirs for one user ("{user}" replaced).
std::vector<std::string> input_dirs_for(const LauncherConfig& config, const std::string& user);

// Parses the flags; `usage` receives the help text. Errors name the flag.
absl::StatusOr<LauncherConfig> parse_launcher_flags(const std::vector<std::string>& args);
extern const char* const kLauncherUsage;

}  // namespace aln::launcher
