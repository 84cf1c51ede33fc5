// aln-launcher: the gRPC job service (proto/aln/v1/launcher.proto) over a pool of hosts and slots,
// with a durable SQLite job store, its own /metrics and a Prometheus service-discovery endpoint.
// SIGTERM or SIGINT stops the service; running jobs keep running and are re-attached on restart.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "launcher/http_server.h"
#include "launcher/job_manager.h"
#include "launcher/job_service.h"
#include "launcher/launcher_config.h"

namespace {
namespace fs = std::filesystem;
using aln::launcher::LauncherConfig;

absl::StatusOr<std::string> read_file(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

int run(const std::vector<std::string>& args) {
  std::string ready_file;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--ready-file" && i + 1 < args.size()) {
      ready_file = args[++i];
    } else {
      rest.push_back(args[i]);
    }
  }
  auto parsed = aln::launcher::parse_launcher_flags(rest);
  if (!parsed.ok()) {
    std::fprintf(stderr, "aln-launcher: %s\n%s", std::string(parsed.status().message()).c_str(),
                 aln::launcher::kLauncherUsage);
    return 2;
  }
  LauncherConfig config = *parsed;
  if (config.aln_binary.empty()) {
    config.aln_binary = (fs::read_symlink("/proc/self/exe").parent_path() / "aln").string();
  }
  aln::Logger log(0, "launcher");
  std::map<std::string, aln::launcher::Principal> tokens;
  if (!config.tokens_file.empty()) {
    auto loaded = aln::launcher::load_tokens(config.tokens_file);
    if (!loaded.ok()) {
      std::fprintf(stderr, "aln-launcher: %s\n", std::string(loaded.status().message()).c_str());
      return 2;
    }
    tokens = *loaded;
    if (config.tls_cert.empty() && !aln::launcher::is_loopback_address(config.listen)) {
      log.warning(
          "listening on %s with --tokens but without TLS: tokens cross the network in plain text and can be "
          "replayed by anyone who sees them; add --tls-cert and --tls-key",
          config.listen);
    }
  } else if (!aln::launcher::is_loopback_address(config.listen)) {
    log.warning("listening on %s without --tokens: anyone who reaches this address can submit jobs", config.listen);
  }

  // Signals are taken by sigwait below; every thread started from here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  aln::MetricsRegistry metrics(aln::Labels{{"component", "launcher"}});
  auto manager = aln::launcher::JobManager::create(config, metrics, log);
  if (!manager.ok()) {
    std::fprintf(stderr, "aln-launcher: %s\n", std::string(manager.status().message()).c_str());
    return 1;
  }
  aln::launcher::JobManager* jobs = manager->get();
  auto http = aln::launcher::HttpServer::start(config.http_listen, [&](const std::string& path) {
    if (path == "/metrics") return aln::launcher::HttpResponse{200, "text/plain; version=0.0.4", metrics.serialize()};
    if (path == "/sd") return aln::launcher::HttpResponse{200, "application/json", jobs->service_discovery_json()};
    if (path == "/healthz") return aln::launcher::HttpResponse{200, "text/plain", "ok\n"};
    return aln::launcher::HttpResponse{404, "text/plain", "endpoints: /metrics /sd /healthz\n"};
  });
  if (!http.ok()) {
    std::fprintf(stderr, "aln-launcher: %s\n", std::string(http.status().message()).c_str());
    return 2;
  }

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!config.tls_cert.empty()) {
    auto cert = read_file(config.tls_cert, "--tls-cert");
    auto key = read_file(config.tls_key, "--tls-key");
    if (!cert.ok() || !key.ok()) {
      std::fprintf(stderr, "aln-launcher: %s\n",
                   std::string((cert.ok() ? key.status() : cert.status()).message()).c_str());
      return 2;
    }
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(options);
  }
  grpc::EnableDefaultHealthCheckService(true);
  aln::launcher::JobServiceImpl service(*jobs, tokens, metrics);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(config.listen, credentials, &grpc_port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(config.max_message_bytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    std::fprintf(stderr, "aln-launcher: cannot listen on %s (in use? bad address?); pick another with --listen\n",
                 config.listen.c_str());
    return 2;
  }
  server->GetHealthCheckService()->SetServingStatus("aln.v1.JobService", true);
  const std::string host = config.listen.substr(0, config.listen.rfind(':'));
  log.info("gRPC on %s:%d (%s, %s), /metrics and /sd on http://%s:%d, data in %s, pool %s", host, grpc_port,
           config.tls_cert.empty() ? "plaintext" : "TLS", tokens.empty() ? "no authentication" : "bearer tokens",
           (*http)->host(), (*http)->port(), jobs->config().data_dir, aln::launcher::format_hosts(config.hosts));
  if (!ready_file.empty()) {
    std::ofstream out(ready_file + ".tmp");
    out << "{\"grpc_port\": " << grpc_port << ", \"http_port\": " << (*http)->port() << ", \"pid\": " << getpid()
        << "}\n";
    out.close();
    fs::rename(ready_file + ".tmp", ready_file);
  }
  int signal = 0;
  sigwait(&signals, &signal);
  log.info("signal %d: stopping the service (running jobs keep running; a restart re-attaches to them)", signal);
  server->GetHealthCheckService()->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::printf("aln-launcher — gRPC job service for Aln (JobService in proto/aln/v1/launcher.proto)\n%s",
                  aln::launcher::kLauncherUsage);
      std::puts("  --ready-file FILE        write {grpc_port, http_port, pid} as JSON once serving");
      return 0;
    }
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "aln-launcher: error: %s\n", e.what());
    return 1;
  }
}
