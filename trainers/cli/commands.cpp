#include "trainers/cli/commands.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config/job_config.h"
#include "core/env.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/status.h"
#include "distributed/dist_error.h"
#include "distributed/heartbeat.h"
#include "distributed/mpi_backend.h"
#include "trainers/engine/engine.h"
#include "trainers/trainer.h"

namespace aln::cli {
namespace {

void print_plan(const config::LoadedJob& job) {
  const auto& spec = job.spec;
  const auto& m = spec.model();
  std::printf("job %s (%s): output %s, seed %lld\n", spec.name().c_str(), job.file.c_str(), spec.output_dir().c_str(),
              static_cast<long long>(spec.seed()));
  if (m.path().empty()) {
    const auto& c = m.config();
    std::printf("  model: %s from scratch, hidden %d, layers %d, heads %d/%d kv, vocab %d (init seed %lld%s)\n",
                aln::v1::Architecture_Name(c.architecture()).c_str(), c.hidden_size(), c.num_layers(), c.num_heads(),
                c.num_kv_heads() == 0 ? c.num_heads() : c.num_kv_heads(), c.vocab_size(),
                static_cast<long long>(config::effective_init_seed(spec)), m.has_init_seed() ? "" : ", from seed");
  } else {
    std::printf("  model: %s\n", m.path().c_str());
  }
  size_t index = 0;
  for (const auto& stage : config::effective_stages(spec)) {
    std::vector<std::string> files;
    for (const auto& source : stage.data().train()) files.push_back(source.path());
    const config::StageSeeds seeds = config::stage_seeds(spec, stage, index);
    std::printf("  stage %zu %-8s trainer %-8s lr %g, %lld steps, micro-batch %d; data: %s\n", ++index,
                stage.name().c_str(), config::method_name(stage.trainer()).c_str(), stage.optimizer().lr(),
                static_cast<long long>(stage.optimizer().max_steps()), stage.optimizer().micro_batch_size(),
                absl::StrJoin(files, ", ").c_str());
    std::printf("    seeds: shuffle %lld%s, eval split %llu, sampling %llu, prepare %llu\n",
                static_cast<long long>(seeds.shuffle), seeds.shuffle_explicit ? "" : " (from seed)",
                static_cast<unsigned long long>(seeds.eval_split), static_cast<unsigned long long>(seeds.sampling),
                static_cast<unsigned long long>(seeds.prepare));
  }
  const auto& p = spec.parallel();
  std::printf("  parallel: policy dp %d x pp %d, placement %s, coordinator %s, backend %s, timeout %gs\n",
              p.policy().data_parallel(), p.policy().pipeline_parallel(),
              aln::v1::Placement_Name(p.placement()).c_str(),
              aln::v1::CoordinatorPlacement_Name(p.coordinator()).c_str(), aln::v1::Backend_Name(p.backend()).c_str(),
              p.timeout_s());
  std::printf("  metrics: %s:%d, checkpoints every %d steps (keep %d)\n", spec.metrics().host().c_str(),
              spec.metrics().port(), spec.checkpoint().every_steps(), spec.checkpoint().keep_last());
}

// One line on world rank 0 saying how the ranks lie over the hosts (the node-local rank is what is to
// pick a rank's GPU), from one all-gather of every rank's place on its host.
void log_topology(const dist::MpiRuntime& mpi, dist::Communicator& world, std::chrono::milliseconds timeout,
                  const Logger& log) {
  at::Tensor mine = at::tensor({mpi.node_local_rank(), mpi.node_local_size()}, at::kInt);
  at::Tensor all = at::empty({2 * world.size()}, at::kInt);
  absl::Status gathered = world.all_gather(mine, all)->wait(timeout);
  if (!gathered.ok()) {
    log.error("%s; ending the job", std::string(gathered.message()));
    mpi.abort(1);
  }
  const int* v = all.data_ptr<int>();
  int hosts = 0, most = 0;
  for (int r = 0; r < world.size(); ++r) {
    if (v[2 * r] == 0) ++hosts;
    most = std::max(most, v[2 * r + 1]);
  }
  if (world.rank() != 0) return;
  log.info(
      "topology: %d ranks on %d host%s (at most %d on one; this one, %s, has %d); node-local ranks pick GPUs "
      "(runtime.device: cuda)",
      world.size(), hosts, hosts == 1 ? "" : "s", most, dist::host_name(), mpi.node_local_size());
}

}  // namespace

int run_train(const Args& args) {
  std::string file;
  bool dry_run = false;
  bool print_spec = false;
  bool resume = false;
  for (const auto& arg : args) {
    if (arg == "--dry-run")
      dry_run = true;
    else if (arg == "--print-spec")
      print_spec = true;
    else if (arg == "--resume")
      resume = true;
    else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "aln train: unknown option '%s'; see `aln train --help`\n", arg.c_str());
      return 2;
    } else if (file.empty())
      file = arg;
    else {
      std::fprintf(stderr, "aln train: one job file at most (got '%s' and '%s')\n", file.c_str(), arg.c_str());
      return 2;
    }
  }
  auto loaded =
      file.empty() ? config::load_job_text(default_job_yaml(), "<built-in quickstart>") : config::load_job_file(file);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
    return 2;
  }
  // The launcher places each job's outputs in its own directory, and every other written path below it.
  if (const Environment early = read_environment(); !early.output_dir.empty()) {
    if (absl::Status confined = config::confine_written_paths(&*loaded, early.output_dir); !confined.ok()) {
      std::fprintf(stderr, "%s\n", std::string(confined.message()).c_str());
      return 2;
    }
  }
  // Under mpirun only the first rank prints (MPI is not initialised yet; its launcher's variable says).
  const char* launched_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  const bool first_rank = launched_rank == nullptr || std::string(launched_rank) == "0";
  if (print_spec && first_rank) std::fputs(config::to_text(loaded->spec).c_str(), stdout);
  if (first_rank) print_plan(*loaded);

  trainers::TrainerRegistry registry("trainer");
  trainers::register_all(registry);
  for (const auto& stage : config::effective_stages(loaded->spec)) {
    const std::string method = config::method_name(stage.trainer());
    if (!registry.contains(method)) {
      // Every method job.proto offers is registered in trainers/register_all.cpp; this guards a
      // build that left one out.
      std::fprintf(stderr, "aln train: %s: trainer '%s' is not registered in this build%s\n", loaded->file.c_str(),
                   method.c_str(), dry_run ? "; the job spec itself is valid" : "");
      return dry_run ? 0 : 2;
    }
  }
  if (dry_run) {
    std::printf("dry run: the job spec is valid; nothing was trained\n");
    return 0;
  }
  // Under mpirun every rank runs this same command; rank 0 serves metrics and writes the outputs.
  const bool under_mpi = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr ||
                         std::getenv("PMI_SIZE") != nullptr;
  const auto& par = loaded->spec.parallel();
  const bool separate = par.placement() == aln::v1::SEPARATE;
  const bool own_coordinator = par.coordinator() == aln::v1::OWN_RANK;
  const int processes = config::job_world_size(loaded->spec);
  if (processes > 1 && !under_mpi) {
    std::fprintf(stderr,
                 "aln train: %s: the job needs %d processes (parallel.policy data_parallel x pipeline_parallel%s%s); "
                 "start it with `mpirun -np %d aln train %s`\n",
                 loaded->file.c_str(), processes,
                 absl::StrCat(separate ? ", plus the frozen roles' with placement: separate" : "",
                              par.rollout().ranks() > 0 ? ", plus parallel.rollout.ranks" : "")
                     .c_str(),
                 own_coordinator ? ", plus the coordinator's with coordinator: own_rank" : "", processes,
                 file.empty() ? "JOB.yaml" : file.c_str());
    return 2;
  }
  std::unique_ptr<dist::MpiRuntime> mpi;
  std::unique_ptr<dist::Communicator> world;
  // Starting up waits for every process, bounded too (parallel.startup_timeout_s).
  const auto startup_timeout = config::startup_timeout(loaded->spec);
  if (under_mpi) {
    auto runtime = dist::MpiRuntime::init(nullptr, nullptr, startup_timeout);
    if (!runtime.ok()) {
      std::fprintf(stderr, "aln train: %s\n", std::string(runtime.status().message()).c_str());
      return 1;
    }
    mpi = std::move(*runtime);
    absl::Status joined = capture_status([&] {
      world = mpi->world(startup_timeout);
      return absl::OkStatus();
    });
    if (!joined.ok()) {
      std::fprintf(stderr, "aln train: %s\n", std::string(joined.message()).c_str());
      mpi->abort(1);
    }
  }
  const int rank = world ? world->rank() : 0;
  const Environment env = read_environment();
  // With coordinator: own_rank world rank 0 is the coordinator. With placement: separate the ranks
  // after the policy's grid are the reference's, then the reward models' (the engine checks the
  // layout; this only labels logs and metrics), and the rollout ranks come last.
  const int first_policy = own_coordinator ? 1 : 0;
  const int policy_ranks = par.policy().data_parallel() * par.policy().pipeline_parallel();
  const int reference_ranks = separate && config::separate_roles(loaded->spec).reference
                                  ? par.reference().data_parallel() * par.reference().pipeline_parallel()
                                  : 0;
  // Rollout ranks (either placement) come last.
  const int first_rollout = processes - par.rollout().ranks();
  const std::string role = rank < first_policy                                    ? "coordinator"
                           : rank >= first_rollout                                ? "rollout"
                           : !separate || rank < first_policy + policy_ranks      ? "policy"
                           : rank < first_policy + policy_ranks + reference_ranks ? "reference"
                                                                                  : "reward";
  // Other ranks repeat rank 0's progress; they log warnings and errors only (the policy's first
  // rank logs what it does too when a coordinator of its own writes the outputs).
  Logger log(rank, role, rank <= first_policy ? env.log_level : std::max(env.log_level, LogLevel::kWarning));
  if (!env.problems.empty()) log.warning("%s", env.problems);
  if (env.threads) loaded->spec.mutable_runtime()->set_threads(*env.threads);
  if (env.metrics_port) loaded->spec.mutable_metrics()->set_port(*env.metrics_port);
  // main owns the exposer; the engine only sees the registry.
  MetricsRegistry metrics(Labels{{"job", loaded->spec.name()}, {"rank", std::to_string(rank)}, {"role", role}});
  // Every rank heartbeats rank 0 with its metrics; rank 0 serves them all and ends the job when a
  // rank goes silent for twice the collective timeout (so a stalled collective reports first).
  std::unique_ptr<dist::Heartbeats> heartbeats;
  if (world && world->size() > 1) {
    if (!mpi->threads_supported()) {
      log.warning(
          "this MPI library gives no MPI_THREAD_MULTIPLE: no heartbeats, and rank 0 serves only its own metrics");
    } else {
      const auto ms = [](double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); };
      dist::Heartbeats::Options hb;
      hb.interval = ms(par.heartbeat_s());
      hb.timeout = std::max(ms(2 * par.timeout_s()), ms(3 * par.heartbeat_s()));
      hb.role = role;
      std::unique_ptr<dist::Communicator> channel;
      absl::Status split = capture_status([&] {
        channel = world->split(0, rank, startup_timeout);
        return absl::OkStatus();
      });
      if (!split.ok()) {
        log.error("%s; ending the job", std::string(split.message()));
        mpi->abort(1);
      }
      heartbeats = std::make_unique<dist::Heartbeats>(std::move(channel), hb, metrics,
                                                      [&log, &mpi](const std::string& message) {
                                                        log.error("%s; ending the job", message);
                                                        mpi->abort(1);
                                                      });
    }
  }
  if (world && world->size() > 1) log_topology(*mpi, *world, startup_timeout, log);
  std::unique_ptr<MetricsServer> server;
  if (loaded->spec.metrics().enabled() && rank == 0) {
    auto started =
        heartbeats
            ? MetricsServer::start(loaded->spec.metrics().host(), loaded->spec.metrics().port(), heartbeats->exposed())
            : MetricsServer::start(loaded->spec.metrics().host(), loaded->spec.metrics().port(), metrics);
    if (!started.ok()) {
      std::fprintf(stderr, "aln train: %s\n", std::string(started.status().message()).c_str());
      // The other ranks would wait for this one in their first collective until timeout_s: end them now.
      if (world && world->size() > 1) mpi->abort(1);
      return 1;
    }
    server = std::move(*started);
    log.info("metrics at %s", server->url());
  }
  engine::RunOptions options;
  options.resume = resume ? engine::Resume::kFromLatest : engine::Resume::kNo;
  options.comm = world.get();
  options.comm_threads = mpi != nullptr && mpi->threads_supported();
  options.node_local_rank = mpi != nullptr ? mpi->node_local_rank() : 0;
  options.node_local_size = mpi != nullptr ? mpi->node_local_size() : 1;
  absl::StatusOr<engine::JobReport> report = absl::UnknownError("not run");
  absl::Status status = capture_status([&]() -> absl::Status {
    report = engine::run_job(loaded->spec, options, log, metrics);
    return report.status();
  });
  if (!status.ok()) {
    std::fprintf(stderr, "aln train: %s%s\n",
                 world && world->size() > 1 ? absl::StrCat("rank ", rank, ": ").c_str() : "",
                 std::string(status.message()).c_str());
    const int code = status.code() == absl::StatusCode::kInvalidArgument ||
                             status.code() == absl::StatusCode::kNotFound ||
                             status.code() == absl::StatusCode::kUnimplemented
                         ? 2
                         : 1;
    // Fail fast: the other ranks may be waiting in a collective (or be the reason this one failed);
    // MPI_Abort ends them all now instead of leaving them to their own timeouts.
    if (world && world->size() > 1) mpi->abort(code);
    return code;
  }
  if (rank == 0) {
    std::printf("%s", engine::format_report(*report).c_str());
    std::printf("final model (Hugging Face format): %s\n", report->final_model_dir.c_str());
  }
  return 0;
}

}  // namespace aln::cli
