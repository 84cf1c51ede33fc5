// alnctl: command-line client of aln-launcher (submit, status, list, watch, logs, cancel, health).
// Readable tables by default, --json for scripts. Exit codes: 0 success (for watch and
// submit --watch: the job SUCCEEDED), 1 the call failed or the job did not succeed, 2 bad usage
// or a rejected spec (the message names the key path).
#include <grpcpp/grpcpp.h>
#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aln/v1/launcher.grpc.pb.h"
#include "core/config/job_config.h"
#include "core/env.h"
#include "core/text_escape.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace {

constexpr const char* kUsage =
    "usage: alnctl [--address HOST:PORT] [--token-file FILE] [--tls-ca FILE] [--json] [--timeout S] COMMAND\n"
    "commands:\n"
    "  submit JOB.yaml [--watch] [--skip-local-validation]\n"
    "                              validate locally, submit (runs in the current directory); print the job id\n"
    "  status JOB_ID               one job\n"
    "  list [--state S]... [--user U] [--page-size N]\n"
    "                              jobs (states: queued starting running succeeded failed cancelled lost);\n"
    "                              yours, or everyone's for an admin; fetched N per call (default 1000)\n"
    "  watch JOB_ID                state changes and progress until the job ends (exit 0 if it succeeded)\n"
    "  logs [-f] JOB_ID            the job's log; -f follows it until the job ends\n"
    "  cancel JOB_ID [--wait]      SIGTERM, then SIGKILL after the launcher's grace period\n"
    "  health                      the launcher's gRPC health status\n"
    "environment: ALN_LAUNCHER (address), ALN_TOKEN or ALN_TOKEN_FILE (bearer token)\n";

struct Options {
  std::string address = "127.0.0.1:50051";
  std::string token;
  std::string tls_ca;
  bool json = false;
  double timeout_s = 30;
  std::string user;
};

int usage_error(const std::string& message) {
  std::fprintf(stderr, "alnctl: %s\n%s", message.c_str(), kUsage);
  return 2;
}

std::string to_json(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string state_name(aln::v1::JobState state) { return absl::AsciiStrToLower(aln::v1::JobState_Name(state)); }

std::string age(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  const int64_t s = std::max<int64_t>(0, (now - unix_ms) / 1000);
  if (s < 120) return absl::StrCat(s, "s");
  if (s < 7200) return absl::StrCat(s / 60, "m");
  return absl::StrCat(s / 3600, "h");
}

int rpc_error(const char* what, const grpc::Status& status) {
  static const char* kCodes[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const int code = static_cast<int>(status.error_code());
  std::fprintf(stderr, "alnctl %s: %s: %s\n", what, code >= 0 && code <= 16 ? kCodes[code] : "?",
               status.error_message().c_str());
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr, "  (is aln-launcher running at that address? set --address or ALN_LAUNCHER)\n");
  }
  return status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 2 : 1;
}

class Client {
 public:
  explicit Client(Options options) : options_(std::move(options)) {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!options_.tls_ca.empty()) {
      std::ifstream in(options_.tls_ca);
      std::ostringstream pem;
      pem << in.rdbuf();
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = pem.str();
      credentials = grpc::SslCredentials(ssl);
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(options_.address, credentials, args);
    stub_ = aln::v1::JobService::NewStub(channel_);
  }
  // Every call carries the token and a deadline (streams: only when --timeout was given).
  std::unique_ptr<grpc::ClientContext> context(bool stream = false) const {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
    context->AddMetadata("x-aln-user", options_.user);
    if (!stream || timeout_given) {
      context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s * 1000)));
    }
    return context;
  }
  aln::v1::JobService::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  const Options& options() const { return options_; }
  bool timeout_given = false;

 private:
  Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<aln::v1::JobService::Stub> stub_;
};

void print_status(const aln::v1::JobStatus& s, bool json) {
  if (json) {
    std::printf("%s\n", to_json(s).c_str());
    return;
  }
  // Names, users and causes are other people's text: escaped, so they cannot fake lines here.
  std::printf("job        %s\nname       %s\nuser       %s\nstate      %s\n", s.job_id().c_str(),
              aln::escape_for_log(s.name()).c_str(), aln::escape_for_log(s.user()).c_str(),
              state_name(s.state()).c_str());
  if (!s.cause().empty()) std::printf("cause      %s\n", aln::escape_for_log(s.cause()).c_str());
  if (s.state() == aln::v1::QUEUED) std::printf("queue      position %d\n", s.queue_position());
  std::printf("methods    %s\nprocesses  %d%s%s\n", s.methods().c_str(), s.world_size(),
              s.hosts().empty() ? "" : " on ", s.hosts().c_str());
  std::printf("progress   step %lld, loss %.6g%s%s\n", static_cast<long long>(s.step()), s.loss(),
              s.stage().empty() ? "" : ", stage ", s.stage().c_str());
  if (!s.metrics().empty()) {
    std::map<std::string, double> sorted(s.metrics().begin(), s.metrics().end());
    std::string line;
    for (const auto& [k, v] : sorted) line += absl::StrFormat("%s%s %.4g", line.empty() ? "" : ", ", k, v);
    std::printf("metrics    %s\n", line.c_str());
  }
  std::printf("submitted  %s ago\n", age(s.submitted_unix_ms()).c_str());
  if (s.ended_unix_ms() > 0)
    std::printf("ended      %s ago, exit code %d\n", age(s.ended_unix_ms()).c_str(), s.exit_code());
  if (!s.metrics_url().empty()) std::printf("metrics    %s\n", s.metrics_url().c_str());
  std::printf("run dir    %s\nlog        %s\n", s.run_dir().c_str(), s.log_path().c_str());
}

int watch(Client& client, const std::string& job_id, bool json) {
  auto context = client.context(true);
  aln::v1::WatchJobRequest request;
  request.set_job_id(job_id);
  auto reader = client.stub().WatchJob(context.get(), request);
  aln::v1::JobStatus status;
  aln::v1::JobState last = aln::v1::JOB_STATE_UNSPECIFIED;
  while (reader->Read(&status)) {
    last = status.state();
    if (json) {
      std::printf("%s\n", to_json(status).c_str());
    } else {
      std::printf("%s %-9s step %-6lld loss %-10.6g%s%s\n", status.job_id().c_str(), state_name(status.state()).c_str(),
                  static_cast<long long>(status.step()), status.loss(), status.cause().empty() ? "" : "  ",
                  aln::escape_for_log(status.cause()).c_str());
    }
    std::fflush(stdout);
  }
  grpc::Status done = reader->Finish();
  if (!done.ok()) return rpc_error("watch", done);
  return last == aln::v1::SUCCEEDED ? 0 : 1;
}

int submit(Client& client, const std::vector<std::string>& args) {
  std::string path;
  bool follow = false;
  bool local_check = true;
  for (const auto& a : args) {
    if (a == "--watch")
      follow = true;
    else if (a == "--skip-local-validation")
      local_check = false;
    else if (path.empty())
      path = a;
    else
      return usage_error("submit: one job file");
  }
  if (path.empty()) return usage_error("submit: which job file?");
  // Validate here first: the message names the user's file and line, not the launcher's copy.
  auto loaded = aln::config::load_job_file(path);
  if (!loaded.ok() && local_check) {
    std::fprintf(stderr, "alnctl submit: %s\n", std::string(loaded.status().message()).c_str());
    return 2;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "alnctl submit: %s: cannot read the job file\n", path.c_str());
    return 2;
  }
  std::ostringstream text;
  text << in.rdbuf();
  aln::v1::SubmitJobRequest request;
  request.set_spec_yaml(text.str());
  if (loaded.ok()) *request.mutable_spec() = loaded->spec;
  request.set_workdir(std::filesystem::current_path().string());
  aln::v1::SubmitJobResponse response;
  auto context = client.context();
  grpc::Status status = client.stub().SubmitJob(context.get(), request, &response);
  if (!status.ok()) return rpc_error("submit", status);
  if (client.options().json) {
    std::printf("%s\n", to_json(response).c_str());
  } else {
    std::printf("%s\n", response.job_id().c_str());
  }
  std::fflush(stdout);
  return follow ? watch(client, response.job_id(), client.options().json) : 0;
}

int list(Client& client, const std::vector<std::string>& args) {
  aln::v1::ListJobsRequest request;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--state" && i + 1 < args.size()) {
      aln::v1::JobState state;
      if (!aln::v1::JobState_Parse(absl::AsciiStrToUpper(args[++i]), &state)) {
        return usage_error(absl::StrCat("list: unknown state '", args[i], "'"));
      }
      request.add_states(state);
    } else if (args[i] == "--user" && i + 1 < args.size()) {
      request.set_user(args[++i]);
    } else if (args[i] == "--page-size" && i + 1 < args.size()) {
      int size = 0;
      if (!absl::SimpleAtoi(args[++i], &size) || size < 1) {
        return usage_error(absl::StrCat("list: --page-size '", args[i], "' is not a positive integer"));
      }
      request.set_page_size(size);
    } else {
      return usage_error(absl::StrCat("list: unknown option '", args[i], "'"));
    }
  }
  // Page after page: the launcher answers at most 1000 jobs per call.
  aln::v1::ListJobsResponse response;
  if (request.page_size() == 0) request.set_page_size(1000);
  do {
    aln::v1::ListJobsResponse page;
    auto context = client.context();
    grpc::Status status = client.stub().ListJobs(context.get(), request, &page);
    if (!status.ok()) return rpc_error("list", status);
    for (auto& j : *page.mutable_jobs()) *response.add_jobs() = std::move(j);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (client.options().json) {
    std::printf("%s\n", to_json(response).c_str());
    return 0;
  }
  std::printf("%-12s %-20s %-10s %-10s %6s %10s %5s %6s  %s\n", "JOB", "NAME", "USER", "STATE", "STEP", "LOSS", "PROCS",
              "AGE", "CAUSE");
  for (const auto& j : response.jobs()) {
    std::printf("%-12s %-20.20s %-10.10s %-10s %6lld %10.5g %5d %6s  %s\n", j.job_id().c_str(),
                aln::escape_for_log(j.name()).c_str(), j.user().c_str(), state_name(j.state()).c_str(),
                static_cast<long long>(j.step()), j.loss(), j.world_size(), age(j.submitted_unix_ms()).c_str(),
                aln::escape_for_log(j.cause()).c_str());
  }
  return 0;
}

int logs(Client& client, const std::vector<std::string>& args) {
  aln::v1::StreamLogsRequest request;
  for (const auto& a : args) {
    if (a == "-f" || a == "--follow")
      request.set_follow(true);
    else if (request.job_id().empty())
      request.set_job_id(a);
    else
      return usage_error("logs: one job id");
  }
  if (request.job_id().empty()) return usage_error("logs: which job?");
  auto context = client.context(true);
  auto reader = client.stub().StreamLogs(context.get(), request);
  aln::v1::LogChunk chunk;
  while (reader->Read(&chunk)) {
    std::fwrite(chunk.data().data(), 1, chunk.data().size(), stdout);
    std::fflush(stdout);
  }
  grpc::Status status = reader->Finish();
  return status.ok() ? 0 : rpc_error("logs", status);
}

int cancel(Client& client, const std::vector<std::string>& args) {
  std::string job_id;
  bool wait = false;
  for (const auto& a : args) {
    if (a == "--wait")
      wait = true;
    else if (job_id.empty())
      job_id = a;
    else
      return usage_error("cancel: one job id");
  }
  if (job_id.empty()) return usage_error("cancel: which job?");
  aln::v1::CancelJobRequest request;
  request.set_job_id(job_id);
  aln::v1::CancelJobResponse response;
  auto context = client.context();
  grpc::Status status = client.stub().CancelJob(context.get(), request, &response);
  if (!status.ok()) return rpc_error("cancel", status);
  if (wait) {
    watch(client, job_id, client.options().json);
    return 0;
  }
  print_status(response.job(), client.options().json);
  return 0;
}

int health(Client& client) {
  auto stub = grpc::health::v1::Health::NewStub(client.channel());
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("aln.v1.JobService");
  grpc::health::v1::HealthCheckResponse response;
  auto context = client.context();
  grpc::Status status = stub->Check(context.get(), request, &response);
  if (!status.ok()) return rpc_error("health", status);
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int run(std::vector<std::string> args) {
  Options options;
  const aln::Environment env = aln::read_environment();
  if (!env.launcher_address.empty()) options.address = env.launcher_address;
  std::string token_file = env.token_file;
  options.token = env.token;
  if (const passwd* pw = getpwuid(getuid()); pw != nullptr) options.user = pw->pw_name;
  bool timeout_given = false;
  size_t i = 0;
  for (; i < args.size() && args[i].rfind("--", 0) == 0; ++i) {
    const std::string& flag = args[i];
    if (flag == "--json") {
      options.json = true;
      continue;
    }
    if (i + 1 >= args.size()) return usage_error(absl::StrCat(flag, ": missing value"));
    const std::string& value = args[++i];
    if (flag == "--address")
      options.address = value;
    else if (flag == "--token-file")
      token_file = value;
    else if (flag == "--tls-ca")
      options.tls_ca = value;
    else if (flag == "--timeout") {
      if (!absl::SimpleAtod(value, &options.timeout_s) || options.timeout_s <= 0) {
        return usage_error("--timeout: a positive number of seconds");
      }
      timeout_given = true;
    } else {
      return usage_error(absl::StrCat("unknown option '", flag, "'"));
    }
  }
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!(in >> options.token)) {
      std::fprintf(stderr, "alnctl: %s: cannot read a token from it\n", token_file.c_str());
      return 2;
    }
  }
  if (!options.tls_ca.empty() && !std::filesystem::exists(options.tls_ca)) {
    std::fprintf(stderr, "alnctl: --tls-ca: %s does not exist\n", options.tls_ca.c_str());
    return 2;
  }
  if (i >= args.size()) return usage_error("which command?");
  const std::string command = args[i];
  std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
  for (auto it = rest.begin(); it != rest.end();) {  // --json may also follow the command
    if (*it == "--json") {
      options.json = true;
      it = rest.erase(it);
    } else {
      ++it;
    }
  }
  Client client(options);
  client.timeout_given = timeout_given;
  if (command == "submit") return submit(client, rest);
  if (command == "list") return list(client, rest);
  if (command == "logs") return logs(client, rest);
  if (command == "cancel") return cancel(client, rest);
  if (command == "health") return health(client);
  if (command == "status" || command == "watch") {
    if (rest.size() != 1) return usage_error(absl::StrCat(command, ": one job id"));
    if (command == "watch") return watch(client, rest[0], options.json);
    aln::v1::GetJobRequest request;
    request.set_job_id(rest[0]);
    aln::v1::JobStatus status;
    auto context = client.context();
    grpc::Status rpc = client.stub().GetJob(context.get(), request, &status);
    if (!rpc.ok()) return rpc_error("status", rpc);
    print_status(status, options.json);
    return 0;
  }
  return usage_error(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage_error("which command?");
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alnctl: error: %s\n", e.what());
    return 1;
  }
}
