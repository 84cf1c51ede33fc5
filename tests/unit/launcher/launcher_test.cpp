// The launcher's parts on their own: pool and token parsing, the launch template, the SQLite store
// (incl. reopening it, as a restarted launcher does) and process groups (exit status through the
// wrapper, a signal ending the whole group, a failed start reported).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "launcher/job_manager.h"
#include "launcher/job_store.h"
#include "launcher/launch_command.h"
#include "launcher/launcher_config.h"
#include "launcher/memory_plan.h"
#include "core/config/job_config.h"
#include "launcher/process_group.h"

namespace fs = std::filesystem;
using namespace aln::launcher;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("aln-launcher-test-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::optional<int> wait_exit(pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(seconds * 1000));
  while (std::chrono::steady_clock::now() < until) {
    if (auto s = try_reap(pid)) return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

}  // namespace

TEST(LauncherConfig, ParsesHostsAndNamesBadEntries) {
  auto hosts = parse_hosts("h1:4, h2:2,h3");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ((*hosts)[0].name, "h1");
  EXPECT_EQ((*hosts)[0].slots, 4);
  EXPECT_EQ((*hosts)[2].slots, 1);
  EXPECT_EQ(format_hosts(*hosts), "h1:4,h2:2,h3:1");
  auto bad = parse_hosts("h1:4,h2:zero");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'h2:zero'"), std::string::npos) << bad.status();
  EXPECT_FALSE(parse_hosts("h1:0").ok());
  EXPECT_FALSE(parse_hosts("").ok());
}

TEST(LauncherConfig, TokensFileErrorsNameTheLine) {
  const fs::path dir = temp_dir("tokens");
  const std::string path = (dir / "tokens").string();
  std::ofstream(path) << "# comment\n0123456789abcdef0123 alice\n\nfedcba9876543210fedc root admin  # the admin\n";
  auto tokens = load_tokens(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->at("0123456789abcdef0123").user, "alice");
  EXPECT_FALSE(tokens->at("0123456789abcdef0123").admin);
  EXPECT_TRUE(tokens->at("fedcba9876543210fedc").admin);
  std::ofstream(path) << "0123456789abcdef0123 alice\nshort bob\n";
  auto bad = load_tokens(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(path + ":2:"), std::string::npos) << bad.status();
  std::ofstream(path) << "0123456789abcdef0123 alice superuser\n";
  EXPECT_NE(load_tokens(path).status().message().find(":1:"), std::string::npos);
  EXPECT_FALSE(load_tokens((dir / "missing").string()).ok());
  fs::remove_all(dir);
}

TEST(LauncherConfig, FlagsAndDefaults) {
  auto config =
      parse_launcher_flags({"--hosts", "a:2,b:3", "--cancel-grace-s", "1.5", "--job-metrics-ports", "9600:10"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hosts.size(), 2u);
  EXPECT_DOUBLE_EQ(config->cancel_grace_s, 1.5);
  EXPECT_EQ(config->job_metrics_port_base, 9600);
  EXPECT_EQ(config->listen, "127.0.0.1:50051");                      // loopback unless told otherwise
  EXPECT_FALSE(parse_launcher_flags({"--tls-cert", "c.pem"}).ok());  // a key is needed too
  auto unknown = parse_launcher_flags({"--frobnicate"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("--frobnicate"), std::string::npos);
  EXPECT_FALSE(parse_launcher_flags({"--cancel-grace-s", "soon"}).ok());
}

// Values outside what the launcher can use are refused by name, not wrapped or taken as "inf".
TEST(LauncherConfig, OptionValuesAreRangeChecked) {
  auto huge = parse_launcher_flags({"--max-message-bytes", "3000000000"});  // above INT_MAX: it used to wrap
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().message(), "--max-message-bytes: '3000000000' is not a number from 1024 to 1073741824");
  auto fine = parse_launcher_flags({"--max-message-bytes", "1073741824"});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->max_message_bytes, 1 << 30);
  EXPECT_FALSE(parse_launcher_flags({"--max-message-bytes", "4096.5"}).ok());
  for (const char* bad : {"nan", "inf", "-1", "86401"}) {
    EXPECT_FALSE(parse_launcher_flags({"--cancel-grace-s", bad}).ok()) << bad;
  }
  EXPECT_FALSE(parse_launcher_flags({"--poll-interval-s", "0"}).ok());
  EXPECT_FALSE(parse_launcher_flags({"--poll-interval-s", "61"}).ok());
}

TEST(LauncherConfig, InputDirsAndJobLimit) {
  auto config = parse_launcher_flags({"--input-dirs", "/data/shared, /data/users/{user}", "--max-jobs-per-user", "3"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(input_dirs_for(*config, "alice"), (std::vector<std::string>{"/data/shared", "/data/users/alice"}));
  EXPECT_EQ(config->max_jobs_per_user, 3);
  EXPECT_EQ(parse_launcher_flags({}).value().max_jobs_per_user, 1000);
  auto relative = parse_launcher_flags({"--input-dirs", "data"});
  ASSERT_FALSE(relative.ok());
  EXPECT_EQ(relative.status().message(), "--input-dirs: 'data' is not an absolute directory");
  EXPECT_FALSE(parse_launcher_flags({"--max-jobs-per-user", "-1"}).ok());
  EXPECT_FALSE(parse_launcher_flags({"--max-jobs-per-user", "2.5"}).ok());
}

// The pre-flight memory plan: 16 bytes a parameter unsharded, moments divided by the ranks when
// sharded, stages dividing the rest; a model directory's config.json read like the job reads it;
// refusals say the numbers and what to change.
TEST(MemoryPlan, PolicyStateLowerBoundAndRefusal) {
  const std::string model = "model:\n  config: {vocab_size: 1000, hidden_size: 64, num_layers: 2, num_heads: 4, "
                            "intermediate_size: 128}\ntrainer: {sft: {}}\ndata: {train: [{path: a.jsonl}]}\n";
  auto job = aln::config::load_job_text(model, "j.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  // Tied Llama: embedding 64 000 + 2 x (norms 128 + attention 4 x 4096 + MLP 3 x 8192) + norm 64.
  const int64_t n = 64000 + 2 * (128 + 4 * 4096 + 3 * 8192) + 64;
  auto e = policy_state_per_rank(job->spec, "/nonexistent");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->parameters, n);
  EXPECT_DOUBLE_EQ(e->bytes_per_rank, 16.0 * n);
  EXPECT_TRUE(check_policy_fits(*e, 0, job->spec).ok());  // no limit declared
  EXPECT_TRUE(check_policy_fits(*e, 16.0 * n, job->spec).ok());
  absl::Status refused = check_policy_fits(*e, 16.0 * n - 1, job->spec);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("needs at least 0.00 GiB per rank (0.1 M parameters x 16.00 bytes"), std::string::npos)
      << refused.message();
  EXPECT_NE(refused.message().find("raise parallel.policy.data_parallel"), std::string::npos) << refused.message();

  job = aln::config::load_job_text(model + "parallel: {policy: {data_parallel: 4, pipeline_parallel: 2, shard: optimizer}}\n",
                                   "j.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  e = policy_state_per_rank(job->spec, "/nonexistent");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_DOUBLE_EQ(e->bytes_per_rank, (4 + 4 + 8.0 / 4) * n / 2);
  EXPECT_NE(e->breakdown.find("sharded over 4 ranks) / 2 pipeline stages"), std::string::npos) << e->breakdown;

  // FSDP divides weights, gradients and moments; an unsharded job over ranks is told to use it.
  job = aln::config::load_job_text(model + "parallel: {policy: {data_parallel: 4, shard: full}}\n", "j.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  e = policy_state_per_rank(job->spec, "/nonexistent");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_DOUBLE_EQ(e->bytes_per_rank, 16.0 * n / 4);
  EXPECT_NE(e->breakdown.find("all sharded over 4 ranks"), std::string::npos) << e->breakdown;
  job = aln::config::load_job_text(model + "parallel: {policy: {data_parallel: 4}}\n", "j.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  e = policy_state_per_rank(job->spec, "/nonexistent");
  refused = check_policy_fits(*e, 16.0 * n / 2, job->spec);
  EXPECT_NE(refused.message().find("set parallel.policy.shard: full to divide the whole training state over the 4 "
                                   "ranks"),
            std::string::npos)
      << refused.message();

  // model.path, relative to the job's working directory: its config.json (GPT-2 names).
  const fs::path dir = fs::temp_directory_path() / ("aln-memory-plan-" + std::to_string(getpid()));
  fs::create_directories(dir / "m");
  std::ofstream(dir / "m" / "config.json")
      << R"({"model_type": "gpt2", "vocab_size": 100, "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 8})";
  job = aln::config::load_job_text("model: {path: m}\ntrainer: {sft: {}}\ndata: {train: [{path: a.jsonl}]}\n", "j.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  e = policy_state_per_rank(job->spec, dir.string());
  ASSERT_TRUE(e.ok()) << e.status();
  // wte 1600 + wpe 128 + layer (LayerNorms 64, attention 816 + 272, MLP 1088 + 1040) + final LayerNorm 32.
  EXPECT_EQ(e->parameters, 1600 + 128 + (64 + 816 + 272 + 1088 + 1040) + 32);
  EXPECT_FALSE(policy_state_per_rank(job->spec, "/nonexistent").ok());
  fs::remove_all(dir);

  auto flags = parse_launcher_flags({"--slot-memory-gib", "80"});
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_DOUBLE_EQ(flags->slot_memory_gib, 80);
  EXPECT_DOUBLE_EQ(parse_launcher_flags({}).value().slot_memory_gib, 0);
  EXPECT_FALSE(parse_launcher_flags({"--slot-memory-gib", "-1"}).ok());
}

// Progress comes from the tail of train_log.jsonl, read with no lock held: whatever a job wrote,
// one read costs at most kProgressWindow bytes, and half-written or over-long lines give nothing.
TEST(JobProgress, ReadsOnlyTheNewestCompleteLineFromABoundedTail) {
  const fs::path dir = temp_dir("progress");
  const std::string path = (dir / "train_log.jsonl").string();
  EXPECT_EQ(read_progress_tail(path, 0).offset, 0);  // no file yet
  std::ofstream(path) << "{\"global_step\": 1}\n{\"global_step\": 2}\n{\"global_st";
  ProgressTail tail = read_progress_tail(path, 0);
  ASSERT_TRUE(tail.line.has_value());
  EXPECT_EQ(*tail.line, "{\"global_step\": 2}");
  EXPECT_EQ(tail.offset, 38);  // after the second newline; the half line waits
  ProgressTail again = read_progress_tail(path, tail.offset);
  EXPECT_FALSE(again.line.has_value());
  EXPECT_EQ(again.offset, 38);
  {  // 100 MB of one line without a newline, then a real line
    std::ofstream out(path, std::ios::app);
    out << std::string(100 << 20, 'x') << "\n{\"global_step\": 3}\n";
  }
  tail = read_progress_tail(path, again.offset);
  ASSERT_TRUE(tail.line.has_value());
  EXPECT_EQ(*tail.line, "{\"global_step\": 3}");
  EXPECT_EQ(tail.offset, static_cast<int64_t>(fs::file_size(path)));
  {  // a line longer than the window, still unfinished: skipped, not buffered
    std::ofstream out(path, std::ios::app);
    out << std::string(3 * kProgressWindow, 'y');
  }
  const int64_t before = tail.offset;
  tail = read_progress_tail(path, before);
  EXPECT_FALSE(tail.line.has_value());
  EXPECT_EQ(tail.offset, before + 2 * kProgressWindow);
  std::ofstream(path, std::ios::app) << "yy}\n";
  tail = read_progress_tail(path, tail.offset);
  EXPECT_FALSE(tail.line.has_value());  // its start was skipped: not a line to trust
  EXPECT_EQ(tail.offset, static_cast<int64_t>(fs::file_size(path)));
  std::ofstream(path, std::ios::trunc) << "{\"global_step\": 1}\n";  // trimmed on a resume
  tail = read_progress_tail(path, tail.offset);
  ASSERT_TRUE(tail.line.has_value());
  EXPECT_EQ(tail.offset, 19);
  fs::remove_all(dir);
}

TEST(LauncherConfig, LoopbackAddresses) {
  for (const char* a : {"127.0.0.1:50051", "127.1.2.3:1", "localhost:9", "[::1]:50051", "::1", "localhost"}) {
    EXPECT_TRUE(is_loopback_address(a)) << a;
  }
  for (const char* a : {"0.0.0.0:50051", "[::]:50051", "10.0.0.1:50051", "host.example:1", "128.0.0.1:1"}) {
    EXPECT_FALSE(is_loopback_address(a)) << a;
  }
}

TEST(LaunchCommand, ExpandsPlaceholdersWordByWord) {
  const std::map<std::string, std::string> values = {
      {"aln", "/opt/aln/bin/aln"}, {"spec", "/data/my jobs/job.yaml"}, {"np", "4"},
      {"hosts", "h1:2,h2:2"},      {"job_id", "job-000007"},           {"run_dir", "/data/run"}};
  auto argv = expand_launch_template(default_launch_template(4), values);
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_EQ(argv->front(), "mpirun");
  EXPECT_EQ((*argv)[2], "4");
  EXPECT_EQ(argv->back(), "/data/my jobs/job.yaml");  // one word, spaces and all
  auto single = expand_launch_template(default_launch_template(1), values);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(*single, (std::vector<std::string>{"/opt/aln/bin/aln", "train", "/data/my jobs/job.yaml"}));
  auto mixed = expand_launch_template("srun --job-name=aln-{job_id} {aln}", values);
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ((*mixed)[1], "--job-name=aln-job-000007");
  auto unknown = expand_launch_template("{aln} {gpu}", values);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("{gpu}"), std::string::npos);
  EXPECT_FALSE(expand_launch_template("{aln", values).ok());
  EXPECT_FALSE(expand_launch_template("   ", values).ok());
}

TEST(JobStore, RoundTripAndReopen) {
  const fs::path dir = temp_dir("store");
  const std::string path = (dir / "jobs.sqlite").string();
  {
    auto store = JobStore::open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 1; i <= 3; ++i) {
      JobRecord job;
      job.seq = i;
      job.status.set_job_id("job-" + std::to_string(i));
      job.status.set_user(i == 2 ? "bob" : "alice");
      job.status.set_state(aln::v1::QUEUED);
      job.spec_yaml = "name: j" + std::to_string(i) + "\n";
      job.workdir = "/tmp";
      ASSERT_TRUE((*store)->put(job).ok());
    }
    JobRecord update;
    update.seq = 2;
    update.status.set_job_id("job-2");
    update.status.set_user("bob");
    update.status.set_state(aln::v1::RUNNING);
    update.status.set_loss(1.25);
    update.pgid = 4242;
    update.start_ticks = 99;
    update.metrics_port = 9501;
    ASSERT_TRUE((*store)->put(update).ok());
  }
  auto reopened = JobStore::open(path);  // what a restarted launcher does
  ASSERT_TRUE(reopened.ok());
  auto jobs = (*reopened)->load_all();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 3u);  // the update replaced its row, no duplicate
  EXPECT_EQ((*jobs)[1].status.state(), aln::v1::RUNNING);
  EXPECT_EQ((*jobs)[1].status.loss(), 1.25);
  EXPECT_EQ((*jobs)[1].pgid, 4242);
  EXPECT_EQ((*jobs)[1].start_ticks, 99);
  EXPECT_EQ((*jobs)[2].spec_yaml, "name: j3\n");
  auto unwritable = JobStore::open((dir / "no-such-dir" / "jobs.sqlite").string());
  ASSERT_FALSE(unwritable.ok());
  EXPECT_NE(unwritable.status().message().find("no-such-dir"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ProcessGroup, ExitStatusEnvironmentAndWorkdir) {
  const fs::path dir = temp_dir("spawn");
  const std::string log = (dir / "job.log").string();
  const std::string exit_file = (dir / "exit_status").string();
  auto spawned = spawn_process_group({"/bin/sh", "-c", "pwd; echo \"id=$ALN_JOB_ID\"; exit 3"},
                                     {{"ALN_JOB_ID", "job-000042"}}, dir.string(), log, exit_file);
  ASSERT_TRUE(spawned.ok()) << spawned.status();
  EXPECT_EQ(getpgid(spawned->pid), spawned->pid);  // its own group
  auto status = wait_exit(spawned->pid, 10);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(describe_wait_status(*status).first, 3);
  EXPECT_EQ(read_exit_status(exit_file), 3);  // what a restarted launcher would read
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(dir.string()), std::string::npos) << text;
  EXPECT_NE(text.find("id=job-000042"), std::string::npos) << text;
  auto missing = spawn_process_group({"/bin/true"}, {}, (dir / "nowhere").string(), log, exit_file);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nowhere"), std::string::npos);
  fs::remove_all(dir);
}

// A descriptor the launcher inherited (here: opened without O_CLOEXEC, as a lock of whoever
// started it would be) must not reach the job: it gets stdin, stdout and stderr only.
TEST(ProcessGroup, JobsGetOnlyStandardDescriptors) {
  const fs::path dir = temp_dir("fds");
  const std::string held = (dir / "held.lock").string();
  const int leaked = ::open(held.c_str(), O_WRONLY | O_CREAT, 0644);  // no O_CLOEXEC on purpose
  ASSERT_GE(leaked, 3);
  auto spawned = spawn_process_group({"/bin/ls", "-l", "/proc/self/fd"}, {}, dir.string(), (dir / "log").string(),
                                     (dir / "exit_status").string());
  ::close(leaked);
  ASSERT_TRUE(spawned.ok()) << spawned.status();
  auto status = wait_exit(spawned->pid, 10);
  ASSERT_TRUE(status.has_value());
  std::ifstream in(dir / "log");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find("held.lock"), std::string::npos) << text;
  // 0, 1, 2 and the directory ls itself is reading.
  size_t links = 0;
  for (size_t at = text.find(" -> "); at != std::string::npos; at = text.find(" -> ", at + 1)) ++links;
  EXPECT_EQ(links, 4u) << text;
  fs::remove_all(dir);
}

TEST(ProcessGroup, SignalReachesTheWholeGroup) {
  const fs::path dir = temp_dir("group");
  // A grandchild in the background: the group signal must end it too.
  auto spawned = spawn_process_group({"/bin/sh", "-c", "sleep 300 & echo $! > child.pid; wait"}, {}, dir.string(),
                                     (dir / "log").string(), (dir / "exit_status").string());
  ASSERT_TRUE(spawned.ok());
  pid_t child = 0;
  for (int i = 0; i < 200 && child == 0; ++i) {
    std::ifstream in(dir / "child.pid");
    if (!(in >> child)) child = 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GT(child, 0);
  EXPECT_TRUE(leader_alive(spawned->pid, spawned->start_ticks));
  EXPECT_FALSE(leader_alive(spawned->pid, spawned->start_ticks + 1));  // a reused pid is not the job
  signal_group(spawned->pid, SIGTERM);
  auto status = wait_exit(spawned->pid, 10);
  ASSERT_TRUE(status.has_value());
  // Gone or a zombie (reparented; whether PID 1 reaps it is not ours to say).
  for (int i = 0; i < 100 && process_start_ticks(child); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(process_start_ticks(child).has_value()) << "the grandchild survived the group signal";
  // The wrapper outlived the SIGTERM and recorded how the command ended (128 + SIGTERM).
  EXPECT_EQ(read_exit_status((dir / "exit_status").string()), 128 + SIGTERM);
  EXPECT_EQ(describe_wait_status(*status).first, 128 + SIGTERM);
  EXPECT_NE(describe_wait_status(*status).second.find("signal 15"), std::string::npos);
  fs::remove_all(dir);
}
