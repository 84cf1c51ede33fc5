// Load on a running aln-launcher: C clients (each its own channel) make R mixed requests each
// (submit, get, list, cancel, logs, health), then the jobs are checked: every acknowledged
// submission is there exactly once, nothing unacknowledged appeared, and every job ends SUCCEEDED or
// CANCELLED (none FAILED or LOST). Prints JSON (throughput, latency percentiles per RPC, counts);
// exit 0 only with zero unexpected errors and no job lost or duplicated. Used by the test
// (launcher_load_test.sh) and the benchmark (bench/launcher_load.sh).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aln/v1/launcher.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Sample {
  std::string method;
  double ms;
};

struct Shared {
  std::mutex mu;
  std::vector<Sample> samples;
  std::vector<std::string> acknowledged;  // job ids SubmitJob returned
  std::map<std::string, int> unexpected;  // "Method CODE" -> count
  std::vector<std::string> examples;      // a few unexpected messages
};

std::unique_ptr<grpc::ClientContext> context(double seconds) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(static_cast<int>(seconds * 1000)));
  c->AddMetadata("x-aln-user", "load");
  return c;
}

// Every job, page after page (ListJobs answers at most 1000 a page).
grpc::Status list_all(aln::v1::JobService::Stub& stub, aln::v1::ListJobsResponse* all) {
  aln::v1::ListJobsRequest request;
  request.set_page_size(1000);
  do {
    aln::v1::ListJobsResponse page;
    auto c = context(30);
    grpc::Status s = stub.ListJobs(c.get(), request, &page);
    if (!s.ok()) return s;
    for (auto& j : *page.mutable_jobs()) *all->add_jobs() = std::move(j);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  return grpc::Status::OK;
}

void client(int index, const std::string& address, int requests, const std::string& spec_yaml,
            const std::string& workdir, Shared& shared) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = aln::v1::JobService::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);
  std::mt19937 rng(static_cast<unsigned>(index) * 7919u + 1);
  std::vector<std::string> mine;
  std::vector<Sample> samples;
  auto record = [&](const char* method, Clock::time_point start, const grpc::Status& status, bool expected_failure) {
    samples.push_back({method, std::chrono::duration<double, std::milli>(Clock::now() - start).count()});
    if (!status.ok() && !expected_failure) {
      std::lock_guard<std::mutex> lock(shared.mu);
      ++shared.unexpected[std::string(method) + " " + std::to_string(status.error_code())];
      if (shared.examples.size() < 5) shared.examples.push_back(std::string(method) + ": " + status.error_message());
    }
  };
  for (int i = 0; i < requests; ++i) {
    const int kind = static_cast<int>(rng() % 10);
    const auto start = Clock::now();
    if (kind <= 1 || mine.empty()) {  // 20 %: submit (and every client's first request)
      aln::v1::SubmitJobRequest request;
      request.set_spec_yaml(spec_yaml);
      request.set_workdir(workdir);
      aln::v1::SubmitJobResponse response;
      auto c = context(30);
      grpc::Status status = stub->SubmitJob(c.get(), request, &response);
      record("SubmitJob", start, status, false);
      if (status.ok()) {
        mine.push_back(response.job_id());
        std::lock_guard<std::mutex> lock(shared.mu);
        shared.acknowledged.push_back(response.job_id());
      }
    } else if (kind <= 4) {  // 30 %: get one of ours
      aln::v1::GetJobRequest request;
      request.set_job_id(mine[rng() % mine.size()]);
      aln::v1::JobStatus response;
      auto c = context(30);
      record("GetJob", start, stub->GetJob(c.get(), request, &response), false);
    } else if (kind <= 6) {  // 20 %: list (every other one filtered by state)
      aln::v1::ListJobsRequest request;
      if (kind == 6) request.add_states(aln::v1::QUEUED);
      aln::v1::ListJobsResponse response;
      auto c = context(30);
      record("ListJobs", start, stub->ListJobs(c.get(), request, &response), false);
    } else if (kind == 7) {  // 10 %: cancel one of ours (it may have ended already: expected)
      aln::v1::CancelJobRequest request;
      request.set_job_id(mine[rng() % mine.size()]);
      aln::v1::CancelJobResponse response;
      auto c = context(30);
      grpc::Status status = stub->CancelJob(c.get(), request, &response);
      record("CancelJob", start, status, status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    } else if (kind == 8) {  // 10 %: the log of one of ours, no follow
      aln::v1::StreamLogsRequest request;
      request.set_job_id(mine[rng() % mine.size()]);
      auto c = context(30);
      auto reader = stub->StreamLogs(c.get(), request);
      aln::v1::LogChunk chunk;
      while (reader->Read(&chunk)) {
      }
      record("StreamLogs", start, reader->Finish(), false);
    } else {  // 10 %: health
      grpc::health::v1::HealthCheckRequest request;
      grpc::health::v1::HealthCheckResponse response;
      auto c = context(30);
      record("Health", start, health->Check(c.get(), request, &response), false);
    }
  }
  std::lock_guard<std::mutex> lock(shared.mu);
  shared.samples.insert(shared.samples.end(), samples.begin(), samples.end());
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::string address = "127.0.0.1:50051";
  std::string spec_file;
  std::string workdir = ".";
  int clients = 50;
  int requests = 100;
  double drain_s = 120;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--address")
      address = argv[i + 1];
    else if (flag == "--spec")
      spec_file = argv[i + 1];
    else if (flag == "--workdir")
      workdir = argv[i + 1];
    else if (flag == "--clients")
      clients = std::atoi(argv[i + 1]);
    else if (flag == "--requests")
      requests = std::atoi(argv[i + 1]);
    else if (flag == "--drain-s")
      drain_s = std::atof(argv[i + 1]);
    else {
      std::fprintf(stderr, "launcher_load: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  std::ifstream in(spec_file);
  if (!in) {
    std::fprintf(stderr, "launcher_load: --spec FILE (a job YAML) is required\n");
    return 2;
  }
  std::ostringstream text;
  text << in.rdbuf();
  Shared shared;
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back(client, c, address, requests, text.str(), workdir, std::ref(shared));
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  // Every acknowledged job exactly once, nothing else; then wait for the queue to drain.
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = aln::v1::JobService::NewStub(channel);
  aln::v1::ListJobsResponse all;
  const auto drain_until = Clock::now() + std::chrono::milliseconds(static_cast<int>(drain_s * 1000));
  bool drained = false;
  grpc::Status list_status;
  while (Clock::now() < drain_until) {
    all.Clear();
    list_status = list_all(*stub, &all);
    if (!list_status.ok()) break;
    drained = std::all_of(all.jobs().begin(), all.jobs().end(), [](const aln::v1::JobStatus& j) {
      return j.state() == aln::v1::SUCCEEDED || j.state() == aln::v1::FAILED || j.state() == aln::v1::CANCELLED ||
             j.state() == aln::v1::LOST;
    });
    if (drained) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::multiset<std::string> listed;
  std::map<std::string, int> final_states;
  for (const auto& j : all.jobs()) {
    listed.insert(j.job_id());
    ++final_states[aln::v1::JobState_Name(j.state())];
  }
  const std::set<std::string> acknowledged(shared.acknowledged.begin(), shared.acknowledged.end());
  int lost = 0;
  int duplicated = 0;
  int unexpected_jobs = 0;
  for (const auto& id : acknowledged) {
    const size_t n = listed.count(id);
    if (n == 0) ++lost;
    if (n > 1) duplicated += static_cast<int>(n - 1);
  }
  for (const auto& id : listed) {
    if (acknowledged.count(id) == 0) ++unexpected_jobs;
  }
  duplicated += static_cast<int>(shared.acknowledged.size() - acknowledged.size());  // one id handed out twice
  const int bad_final = final_states["FAILED"] + final_states["LOST"];
  int errors = 0;
  for (const auto& [k, n] : shared.unexpected) errors += n;

  std::map<std::string, std::vector<double>> by_method;
  std::vector<double> every;
  for (const auto& s : shared.samples) {
    by_method[s.method].push_back(s.ms);
    every.push_back(s.ms);
  }
  std::printf("{\n  \"clients\": %d, \"requests_per_client\": %d, \"requests\": %zu, \"seconds\": %.3f,\n", clients,
              requests, shared.samples.size(), seconds);
  std::printf("  \"requests_per_second\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f,\n",
              static_cast<double>(shared.samples.size()) / seconds, percentile(every, 0.5), percentile(every, 0.99),
              percentile(every, 1.0));
  std::printf("  \"methods\": {");
  bool first = true;
  for (const auto& [m, v] : by_method) {
    std::printf("%s\n    \"%s\": {\"count\": %zu, \"p50_ms\": %.3f, \"p99_ms\": %.3f}", first ? "" : ",", m.c_str(),
                v.size(), percentile(v, 0.5), percentile(v, 0.99));
    first = false;
  }
  std::printf("\n  },\n  \"unexpected_errors\": %d, \"jobs_acknowledged\": %zu, \"jobs_listed\": %zu,\n", errors,
              shared.acknowledged.size(), listed.size());
  std::printf("  \"jobs_lost\": %d, \"jobs_duplicated\": %d, \"jobs_unacknowledged\": %d, \"drained\": %s,\n", lost,
              duplicated, unexpected_jobs, drained ? "true" : "false");
  std::printf("  \"final_states\": {");
  first = true;
  for (const auto& [s, n] : final_states) {
    std::printf("%s\"%s\": %d", first ? "" : ", ", s.c_str(), n);
    first = false;
  }
  std::printf("}\n}\n");
  for (const auto& e : shared.examples) std::fprintf(stderr, "unexpected: %s\n", e.c_str());
  if (!list_status.ok()) std::fprintf(stderr, "final ListJobs failed: %s\n", list_status.error_message().c_str());
  const bool ok = errors == 0 && lost == 0 && duplicated == 0 && unexpected_jobs == 0 && drained && bad_final == 0 &&
                  list_status.ok();
  return ok ? 0 : 1;
}
