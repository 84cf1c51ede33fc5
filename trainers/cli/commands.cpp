#include "trainers/cli/commands.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config/job_config.h"
#include "core/env.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/status.h"
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
    std::printf("  model: %s from scratch, hidden %d, layers %d, heads %d/%d kv, vocab %d (init seed %lld)\n",
                aln::v1::Architecture_Name(c.architecture()).c_str(), c.hidden_size(), c.num_layers(), c.num_heads(),
                c.num_kv_heads() == 0 ? c.num_heads() : c.num_kv_heads(), c.vocab_size(),
                static_cast<long long>(m.init_seed()));
  } else {
    std::printf("  model: %s\n", m.path().c_str());
  }
  int index = 0;
  for (const auto& stage : config::effective_stages(spec)) {
    std::vector<std::string> files;
    for (const auto& source : stage.data().train()) files.push_back(source.path());
    std::printf("  stage %d %-8s trainer %-8s lr %g, %lld steps, micro-batch %d; data: %s\n", ++index,
                stage.name().c_str(), config::method_name(stage.trainer()).c_str(), stage.optimizer().lr(),
                static_cast<long long>(stage.optimizer().max_steps()), stage.optimizer().micro_batch_size(),
                absl::StrJoin(files, ", ").c_str());
  }
  const auto& p = spec.parallel();
  std::printf("  parallel: policy dp %d x pp %d, placement %s, backend %s, timeout %gs\n", p.policy().data_parallel(),
              p.policy().pipeline_parallel(), aln::v1::Placement_Name(p.placement()).c_str(),
              aln::v1::Backend_Name(p.backend()).c_str(), p.timeout_s());
  std::printf("  metrics: %s:%d, checkpoints every %d steps (keep %d)\n", spec.metrics().host().c_str(),
              spec.metrics().port(), spec.checkpoint().every_steps(), spec.checkpoint().keep_last());
}

}  // namespace

int run_not_yet(const std::string& command, const std::string& lands_with) {
  std::fprintf(stderr, "aln %s: not available in this build yet; it lands with %s.\n", command.c_str(),
               lands_with.c_str());
  return 2;
}

int run_train(const Args& args) {
  std::string file;
  bool dry_run = false;
  bool print_spec = false;
  bool resume = false;
  for (const auto& arg : args) {
    if (arg == "--dry-run") dry_run = true;
    else if (arg == "--print-spec") print_spec = true;
    else if (arg == "--resume") resume = true;
    else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "aln train: unknown option '%s'; see `aln train --help`\n", arg.c_str());
      return 2;
    } else if (file.empty()) file = arg;
    else {
      std::fprintf(stderr, "aln train: one job file at most (got '%s' and '%s')\n", file.c_str(), arg.c_str());
      return 2;
    }
  }
  auto loaded = file.empty() ? config::load_job_text(default_job_yaml(), "<built-in quickstart>")
                             : config::load_job_file(file);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
    return 2;
  }
  if (print_spec) std::fputs(config::to_text(loaded->spec).c_str(), stdout);
  print_plan(*loaded);

  trainers::TrainerRegistry registry("trainer");
  trainers::register_all(registry);
  for (const auto& stage : config::effective_stages(loaded->spec)) {
    const std::string method = config::method_name(stage.trainer());
    if (!registry.contains(method)) {
      std::fprintf(stderr, "aln train: %s: trainer '%s' is not available in this build yet (it lands with %s)%s\n",
                   loaded->file.c_str(), method.c_str(),
                   method == "sft" || method == "reward" || method == "dpo" || method == "safedpo"
                       ? "the alignment core"
                       : "the safety-methods work",
                   dry_run ? "; the job spec itself is valid" : "");
      return dry_run ? 0 : 2;
    }
  }
  if (dry_run) {
    std::printf("dry run: the job spec is valid; nothing was trained\n");
    return 0;
  }
  const Environment env = read_environment();
  Logger log(0, "coordinator", env.log_level);
  if (!env.problems.empty()) log.warning("%s", env.problems);
  if (env.threads) loaded->spec.mutable_runtime()->set_threads(*env.threads);
  if (env.metrics_port) loaded->spec.mutable_metrics()->set_port(*env.metrics_port);
  // main owns the exposer; the engine only sees the registry.
  MetricsRegistry metrics(Labels{{"job", loaded->spec.name()}, {"rank", "0"}, {"role", "policy"}});
  std::unique_ptr<MetricsServer> server;
  if (loaded->spec.metrics().enabled()) {
    auto started = MetricsServer::start(loaded->spec.metrics().host(), loaded->spec.metrics().port(), metrics);
    if (!started.ok()) {
      std::fprintf(stderr, "aln train: %s\n", std::string(started.status().message()).c_str());
      return 1;
    }
    server = std::move(*started);
    log.info("metrics at %s", server->url());
  }
  engine::RunOptions options;
  options.resume = resume ? engine::Resume::kFromLatest : engine::Resume::kNo;
  absl::StatusOr<engine::JobReport> report = absl::UnknownError("not run");
  absl::Status status = capture_status([&]() -> absl::Status {
    report = engine::run_job(loaded->spec, options, log, metrics);
    return report.status();
  });
  if (!status.ok()) {
    std::fprintf(stderr, "aln train: %s\n", std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound ? 2 : 1;
  }
  std::printf("%s", engine::format_report(*report).c_str());
  std::printf("final model (Hugging Face format): %s\n", report->final_model_dir.c_str());
  return 0;
}

}  // namespace aln::cli
