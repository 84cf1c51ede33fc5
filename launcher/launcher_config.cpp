#include "launcher/launcher_config.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace aln::launcher {

const char* const kLauncherUsage =
    "usage: aln-launcher [options]\n"
    "  --listen ADDR            gRPC address (default 127.0.0.1:50051; loopback unless you say otherwise)\n"
    "  --http-listen ADDR       /metrics and /sd (Prometheus HTTP service discovery) (default 127.0.0.1:9480)\n"
    "  --data-dir DIR           job store (SQLite), job directories and logs (default launcher-data)\n"
    "  --hosts H:S[,H:S...]     resource pool, hosts and slots (default localhost:<cores>)\n"
    "  --aln PATH               the aln binary jobs run (default: next to aln-launcher)\n"
    "  --launch-template T      command for a job; placeholders {aln} {spec} {np} {hosts} {job_id} {run_dir}\n"
    "  --tokens FILE            bearer tokens, one `TOKEN USER [admin]` per line (default: no authentication)\n"
    "  --tls-cert FILE --tls-key FILE   serve TLS\n"
    "  --cancel-grace-s S       SIGTERM, then SIGKILL after S seconds, 0..86400 (default 10)\n"
    "  --max-message-bytes N    request size limit, 1024..1073741824 (default 4194304)\n"
    "  --job-metrics-ports B:N  jobs' /metrics ports B..B+N-1 (default 9500:100)\n"
    "  --input-dirs D[,D...]    absolute directories jobs may read ({user} = the submitting user);\n"
    "                           default: anything the launcher's user can read\n"
    "  --max-jobs-per-user N    jobs one user may have queued or running, 0..1000000, 0 = no limit\n"
    "                           (default 1000)\n"
    "  --slot-memory-gib G      memory one slot offers (a GPU's, or a host's share per slot), 0..1048576 GiB;\n"
    "                           jobs whose policy state per rank cannot fit are refused (default 0: no check)\n";

absl::StatusOr<std::vector<Host>> parse_hosts(const std::string& text) {
  std::vector<Host> hosts;
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    Host host;
    const size_t colon = entry.rfind(':');
    if (colon == absl::string_view::npos) {
      host.name = std::string(entry);
    } else {
      host.name = std::string(entry.substr(0, colon));
      if (!absl::SimpleAtoi(entry.substr(colon + 1), &host.slots) || host.slots < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("--hosts: '", std::string(entry), "': slots must be a positive integer (host:slots)"));
      }
    }
    if (host.name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--hosts: '", std::string(entry), "': empty host name"));
    }
    hosts.push_back(host);
  }
  if (hosts.empty()) return absl::InvalidArgumentError("--hosts: no hosts given (expected host:slots,...)");
  return hosts;
}

bool is_loopback_address(const std::string& address) {
  // "HOST:PORT", "[V6]:PORT" or a bare host.
  std::string host = address;
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') == std::string::npos ? std::string::npos : host.find(']') - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string::npos && host.find(':') == colon) {
    host.resize(colon);
  }
  return host.rfind("127.", 0) == 0 || host == "localhost" || host == "::1";
}

std::string format_hosts(const std::vector<Host>& hosts) {
  std::string out;
  for (const Host& h : hosts) absl::StrAppend(&out, out.empty() ? "" : ",", h.name, ":", h.slots);
  return out;
}

absl::StatusOr<std::map<std::string, Principal>> load_tokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the tokens file (--tokens)"));
  std::map<std::string, Principal> tokens;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::vector<std::string> words = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    if (words.size() < 2 || words.size() > 3 || (words.size() == 3 && words[2] != "admin")) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": expected `TOKEN USER [admin]`, got ", words.size(), " words"));
    }
    if (words[0].size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number, ": token shorter than 16 characters; generate one with `openssl rand -hex 32`"));
    }
    if (tokens.count(words[0]) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": token repeated"));
    }
    tokens[words[0]] = Principal{words[1], words.size() == 3};
  }
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens in the file"));
  return tokens;
}

std::vector<std::string> input_dirs_for(const LauncherConfig& config, const std::string& user) {
  std::vector<std::string> out;
  for (const std::string& dir : config.input_dirs) out.push_back(absl::StrReplaceAll(dir, {{"{user}", user}}));
  return out;
}

absl::StatusOr<LauncherConfig> parse_launcher_flags(const std::vector<std::string>& args) {
  LauncherConfig config;
  std::string hosts;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(flag, ": missing value"));
      return args[++i];
    };
    // A finite number in [lo, hi] ("inf" and "nan" parse as numbers but are not settings).
    auto number = [&](double* out, double lo, double hi) -> absl::Status {
      auto v = value();
      if (!v.ok()) return v.status();
      if (!absl::SimpleAtod(*v, out) || !std::isfinite(*out) || *out < lo || *out > hi) {
        auto text = [](double x) {
          return x == std::floor(x) ? absl::StrCat(static_cast<int64_t>(x)) : absl::StrCat(x);
        };
        return absl::InvalidArgumentError(
            absl::StrCat(flag, ": '", *v, "' is not a number from ", text(lo), " to ", text(hi)));
      }
      return absl::OkStatus();
    };
    std::string* target = nullptr;
    if (flag == "--listen")
      target = &config.listen;
    else if (flag == "--http-listen")
      target = &config.http_listen;
    else if (flag == "--data-dir")
      target = &config.data_dir;
    else if (flag == "--hosts")
      target = &hosts;
    else if (flag == "--aln")
      target = &config.aln_binary;
    else if (flag == "--launch-template")
      target = &config.launch_template;
    else if (flag == "--tokens")
      target = &config.tokens_file;
    else if (flag == "--tls-cert")
      target = &config.tls_cert;
    else if (flag == "--tls-key")
      target = &config.tls_key;
    if (target != nullptr) {
      auto v = value();
      if (!v.ok()) return v.status();
      *target = *v;
      continue;
    }
    if (flag == "--cancel-grace-s") {
      if (auto s = number(&config.cancel_grace_s, 0, 86400); !s.ok()) return s;
    } else if (flag == "--test-start-hold-s") {
      if (auto s = number(&config.test_start_hold_s, 0, 60); !s.ok()) return s;
    } else if (flag == "--poll-interval-s") {
      if (auto s = number(&config.poll_interval_s, 0.001, 60); !s.ok()) return s;
    } else if (flag == "--max-message-bytes") {
      // gRPC takes an int; 1 GiB is far above any job spec and well inside it.
      double bytes = 0;
      if (auto s = number(&bytes, 1024, 1 << 30); !s.ok()) return s;
      if (bytes != std::floor(bytes)) return absl::InvalidArgumentError("--max-message-bytes: a whole number of bytes");
      config.max_message_bytes = static_cast<int>(bytes);
    } else if (flag == "--slot-memory-gib") {
      if (auto s = number(&config.slot_memory_gib, 0, 1 << 20); !s.ok()) return s;
    } else if (flag == "--max-jobs-per-user") {
      double n = 0;
      if (auto s = number(&n, 0, 1000000); !s.ok()) return s;
      if (n != std::floor(n)) return absl::InvalidArgumentError("--max-jobs-per-user: a whole number of jobs");
      config.max_jobs_per_user = static_cast<int>(n);
    } else if (flag == "--input-dirs") {
      auto v = value();
      if (!v.ok()) return v.status();
      for (absl::string_view dir : absl::StrSplit(*v, ',', absl::SkipWhitespace())) {
        dir = absl::StripAsciiWhitespace(dir);
        if (dir.empty() || dir.front() != '/') {
          return absl::InvalidArgumentError(
              absl::StrCat("--input-dirs: '", std::string(dir), "' is not an absolute directory"));
        }
        config.input_dirs.emplace_back(dir);
      }
      if (config.input_dirs.empty()) return absl::InvalidArgumentError("--input-dirs: no directory given");
    } else if (flag == "--job-metrics-ports") {
      auto v = value();
      if (!v.ok()) return v.status();
      std::pair<std::string, std::string> parts = absl::StrSplit(*v, ':');
      if (!absl::SimpleAtoi(parts.first, &config.job_metrics_port_base) ||
          !absl::SimpleAtoi(parts.second, &config.job_metrics_port_count) || config.job_metrics_port_base < 1 ||
          config.job_metrics_port_count < 1 || config.job_metrics_port_base + config.job_metrics_port_count > 65536) {
        return absl::InvalidArgumentError(absl::StrCat("--job-metrics-ports: '", *v, "' is not BASE:COUNT"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", flag, "'"));
    }
  }
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (hosts.empty()) {
    hosts = absl::StrCat("localhost:", std::max(1u, std::thread::hardware_concurrency()));
  }
  auto parsed = parse_hosts(hosts);
  if (!parsed.ok()) return parsed.status();
  config.hosts = *parsed;
  return config;
}

}  // namespace aln::launcher
