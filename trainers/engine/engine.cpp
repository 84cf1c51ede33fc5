#include "trainers/engine/engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/config/job_config.h"
#include "core/model/hf_checkpoint.h"
#include "core/optim/optimizer.h"
#include "kernels/token_logprobs.h"
#include "trainers/dpo/pair_logprobs.h"
#include "trainers/engine/examples.h"
#include "trainers/engine/progress.h"

namespace aln::engine {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

optim::ScheduleKind schedule_kind(aln::v1::Schedule s) {
  if (s == aln::v1::LINEAR) return optim::ScheduleKind::kLinear;
  if (s == aln::v1::CONSTANT) return optim::ScheduleKind::kConstant;
  return optim::ScheduleKind::kCosine;
}

// Held-out metrics that need no reference model, so "before" and "after" compare the policy alone:
// preference accuracy = share of pairs where the policy gives the chosen response the higher
// log-probability per token; safe-vs-unsafe accuracy = the same on pairs whose responses differ in
// safety, counting the safe one as the one that should win.
std::map<std::string, double> evaluate(trainers::Trainer& trainer, const model::DecoderModel& policy,
                                       const model::DecoderModel* reference, std::vector<buffer::Example>& eval,
                                       int64_t micro, int64_t pad_id) {
  std::map<std::string, double> out;
  if (eval.empty()) return out;
  at::NoGradGuard no_grad;
  double loss = 0, pref = 0, safe_total = 0, safe_right = 0;
  int64_t batches = 0;
  const bool pairs = trainer.needs().records == trainers::RecordKind::kPreferencePairs;
  for (size_t start = 0; start < eval.size(); start += micro) {
    std::vector<const buffer::Example*> batch;
    for (size_t i = start; i < std::min(eval.size(), start + micro); ++i) batch.push_back(&eval[i]);
    trainers::StepContext ctx{&policy, reference, pad_id, 0};
    loss += trainer.compute_loss(batch, ctx).loss.item<double>();
    ++batches;
    if (pairs && trainer.needs().head == trainers::ModelHead::kLanguageModel) {
      buffer::SequenceBatch b = buffer::collate_pairs(batch, pad_id);
      kernels::ResponseLogprobs lp =
          kernels::response_logprobs(policy.logits(b.input_ids, b.attention_mask), b.input_ids, b.response_mask);
      at::Tensor mean = lp.sums / lp.tokens.clamp_min(1);
      const int64_t n = static_cast<int64_t>(batch.size());
      for (int64_t i = 0; i < n; ++i) {
        const double margin = mean[i].item<double>() - mean[n + i].item<double>();
        pref += margin > 0;
        const auto* e = batch[i];
        if (e->unsafe_chosen >= 0 && e->unsafe_rejected >= 0 && e->unsafe_chosen != e->unsafe_rejected) {
          ++safe_total;
          safe_right += (e->unsafe_chosen == 0) == (margin > 0);
        }
      }
    }
  }
  out["loss"] = loss / static_cast<double>(batches);
  if (pairs) {
    out["preference_accuracy"] = pref / static_cast<double>(eval.size());
    if (safe_total > 0) out["safe_vs_unsafe_accuracy"] = safe_right / safe_total;
  }
  return out;
}

}  // namespace

absl::StatusOr<JobReport> run_job(const aln::v1::JobSpec& spec, const RunOptions& options, const Logger& log,
                                  MetricsRegistry& metrics) {
  if (spec.runtime().threads() > 0) at::set_num_threads(spec.runtime().threads());
  auto encoder = load_text_encoder(spec.model().tokenizer(), spec.model().chat_format());
  if (!encoder.ok()) return encoder.status();
  const int64_t pad_id = (*encoder)->pad_id();

  // The policy: a Hugging Face model directory or a fresh model from the spec's config.
  absl::StatusOr<model::DecoderModel> policy_or = absl::UnknownError("unset");
  if (!spec.model().path().empty()) {
    policy_or = model::load_hf_model(spec.model().path());
    if (!policy_or.ok()) return policy_or.status();
  } else {
    model::ModelConfig config = model::from_job_spec(spec.model().config());
    if (config.vocab_size < (*encoder)->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("model.config.vocab_size ", config.vocab_size,
                                                     " is smaller than the tokenizer's ", (*encoder)->vocab_size()));
    }
    config.eos_token_id = (*encoder)->eos_id();
    config.pad_token_id = pad_id;
    policy_or = model::DecoderModel::random_init(config, static_cast<uint64_t>(spec.model().init_seed()));
  }
  model::DecoderModel policy = std::move(*policy_or);
  log.info("policy: %s, %.2fM parameters", policy.config().model_type, policy.num_parameters() / 1e6);

  trainers::TrainerRegistry registry("trainer");
  trainers::register_all(registry);
  auto& loss_gauge = metrics.gauge_family("aln_train_loss", "Training loss of the last optimizer step");
  auto& step_counter = metrics.counter_family("aln_train_steps_total", "Optimizer steps taken");
  auto& tokens_counter = metrics.counter_family("aln_train_tokens_total", "Tokens processed in training");
  auto& tps_gauge = metrics.gauge_family("aln_train_tokens_per_second", "Training throughput");
  auto& lr_gauge = metrics.gauge_family("aln_train_learning_rate", "Learning rate of the last step");
  auto& grad_gauge = metrics.gauge_family("aln_train_grad_norm", "Gradient norm before clipping");
  auto& skipped_counter = metrics.counter_family("aln_train_nonfinite_steps_total", "Steps skipped as non-finite");
  auto& phase_gauge = metrics.gauge_family("aln_step_phase_seconds", "Seconds per phase of the last step");
  auto& method_gauge = metrics.gauge_family("aln_train_metric", "Method-specific training scalars");
  auto& eval_gauge = metrics.gauge_family("aln_eval_metric", "Held-out evaluation scalars");
  auto& data_gauge = metrics.gauge_family("aln_data_records", "Records per stage by outcome");

  JobReport report;
  int64_t global_step = 0;
  const auto stages = config::effective_stages(spec);
  for (size_t s = 0; s < stages.size(); ++s) {
    const aln::v1::StageSpec& stage = stages[s];
    const std::string method = config::method_name(stage.trainer());
    const std::string stage_name = stage.name().empty() ? absl::StrCat("stage", s + 1) : stage.name();
    auto trainer_or = registry.create(method, stage);
    if (!trainer_or.ok()) return trainer_or.status();
    trainers::Trainer& trainer = **trainer_or;
    const trainers::Needs needs = trainer.needs();
    const Labels labels{{"stage", stage_name}, {"trainer", method}};

    auto data = build_stage_data(stage, needs.records, **encoder, static_cast<uint64_t>(spec.seed()) + s);
    if (!data.ok()) return data.status();
    for (const auto& p : data->problems) log.warning("%s", p);
    std::map<std::string, double> counters;
    for (auto* set : {&data->train, &data->eval}) {
      trainers::PrepareContext prep{&stage, set, &counters};
      absl::Status prepared = trainer.prepare(prep);
      if (!prepared.ok()) return prepared;
    }
    data_gauge.Add({{"stage", stage_name}, {"outcome", "read"}}).Set(static_cast<double>(data->rows));
    data_gauge.Add({{"stage", stage_name}, {"outcome", "skipped"}}).Set(static_cast<double>(data->skipped));
    data_gauge.Add({{"stage", stage_name}, {"outcome", "truncated"}}).Set(static_cast<double>(data->truncated));
    for (const auto& [name, value] : counters) data_gauge.Add({{"stage", stage_name}, {"outcome", name}}).Set(value);
    log.info("stage %s (%s): %d train / %d eval examples (%d rows read, %d skipped, %d truncated)", stage_name, method,
             data->train.size(), data->eval.size(), data->rows, data->skipped, data->truncated);

    // The frozen reference is the policy as the stage starts; with reference.mode cached its
    // log-probs are computed once for every example, else on the fly per batch.
    std::optional<model::DecoderModel> reference;
    const auto& opt = stage.optimizer();
    const int64_t micro = opt.micro_batch_size();
    if (needs.reference_logprobs) {
      const auto ref_start = Clock::now();
      reference = policy.to(at::kFloat);
      if (stage.reference().mode() != aln::v1::ON_THE_FLY) {
        for (auto* set : {&data->train, &data->eval}) {
          for (size_t i = 0; i < set->size(); i += micro) {
            std::vector<buffer::Example*> chunk;
            for (size_t k = i; k < std::min(set->size(), i + micro); ++k) chunk.push_back(&(*set)[k]);
            trainers::reference_pair_logprobs(*reference, chunk, pad_id);
          }
        }
        reference.reset();  // cached: the reference model is no longer needed
      }
      phase_gauge.Add({{"stage", stage_name}, {"phase", "reference"}}).Set(since(ref_start));
    }
    const model::DecoderModel* ref_ptr = reference ? &*reference : nullptr;

    StageReport stage_report;
    stage_report.stage = stage_name;
    stage_report.trainer = method;
    stage_report.before = evaluate(trainer, policy, ref_ptr, data->eval, micro, pad_id);

    buffer::Buffer buffer(std::move(data->train), static_cast<uint64_t>(stage.data().shuffle_seed()));
    const int64_t per_step = micro * opt.gradient_accumulation();
    const int64_t total_steps =
        opt.max_steps() > 0 ? opt.max_steps() : std::max<int64_t>(1, opt.epochs() * buffer.shard_size() / per_step);
    optim::AdamW adamw({opt.lr(), opt.beta1(), opt.beta2(), opt.eps(), opt.weight_decay()});
    policy.set_requires_grad(true);
    Progress progress(stage_name, total_steps, spec.metrics().progress_bar() ? ProgressStyle::kBar : ProgressStyle::kLines);
    const auto stage_start = Clock::now();
    int consecutive_bad = 0;
    for (int64_t step = 0; step < total_steps; ++step) {
      if (options.stop_after_steps > 0 && global_step >= options.stop_after_steps) break;
      const auto step_start = Clock::now();
      double fwd = 0, bwd = 0, data_t = 0, step_loss = 0;
      int64_t tokens = 0;
      std::map<std::string, double> step_metrics;
      for (int64_t a = 0; a < opt.gradient_accumulation(); ++a) {
        auto t0 = Clock::now();
        auto batch = buffer.next(micro);
        data_t += since(t0);
        t0 = Clock::now();
        trainers::StepContext ctx{&policy, ref_ptr, pad_id, step};
        trainers::LossOutput out = trainer.compute_loss(batch, ctx);
        fwd += since(t0);
        t0 = Clock::now();
        (out.loss / static_cast<double>(opt.gradient_accumulation())).backward();
        bwd += since(t0);
        step_loss += out.loss.item<double>() / static_cast<double>(opt.gradient_accumulation());
        tokens += out.tokens;
        for (const auto& [k, v] : out.metrics) step_metrics[k] += v / static_cast<double>(opt.gradient_accumulation());
      }
      auto t0 = Clock::now();
      optim::TensorMap& params = policy.tensors();
      const double norm = optim::clip_grad_norm(params, opt.max_grad_norm());
      const double lr = optim::scheduled_lr(schedule_kind(opt.schedule()), opt.lr(), step, opt.warmup_steps(), total_steps);
      if (!std::isfinite(step_loss) || !std::isfinite(norm)) {
        // Skip the update, count it, and stop after too many in a row: diverged training should
        // fail loudly, not burn the budget producing NaNs.
        skipped_counter.Add(labels).Increment();
        if (++consecutive_bad >= opt.max_consecutive_nonfinite()) {
          return absl::InternalError(absl::StrCat("stage ", stage_name, ": ", consecutive_bad,
                                                  " consecutive non-finite steps (loss ", step_loss, ", grad norm ", norm,
                                                  "); lower optimizer.lr or check the data"));
        }
        log.warning("step %d: non-finite loss or gradient, update skipped", step);
      } else {
        consecutive_bad = 0;
        adamw.step(params, lr);
      }
      for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
      const double opt_t = since(t0);
      ++global_step;
      const double step_t = since(step_start);
      loss_gauge.Add(labels).Set(step_loss);
      step_counter.Add(labels).Increment();
      tokens_counter.Add(labels).Increment(static_cast<double>(tokens));
      tps_gauge.Add(labels).Set(static_cast<double>(tokens) / step_t);
      lr_gauge.Add(labels).Set(lr);
      grad_gauge.Add(labels).Set(norm);
      for (auto [phase, secs] : {std::pair{"data", data_t}, {"forward", fwd}, {"backward", bwd}, {"optimizer", opt_t}}) {
        phase_gauge.Add({{"stage", stage_name}, {"phase", phase}}).Set(secs);
      }
      for (const auto& [k, v] : step_metrics) method_gauge.Add({{"stage", stage_name}, {"trainer", method}, {"name", k}}).Set(v);
      progress.update(step + 1, step_loss, static_cast<double>(tokens) / step_t);
      if (spec.eval().every_steps() > 0 && (step + 1) % spec.eval().every_steps() == 0) {
        for (const auto& [k, v] : evaluate(trainer, policy, ref_ptr, data->eval, micro, pad_id)) {
          eval_gauge.Add({{"stage", stage_name}, {"name", k}}).Set(v);
        }
      }
      stage_report.steps = step + 1;
    }
    progress.finish();
    policy.set_requires_grad(false);
    stage_report.seconds = since(stage_start);
    stage_report.after = evaluate(trainer, policy, ref_ptr, data->eval, micro, pad_id);
    for (const auto& [k, v] : stage_report.after) eval_gauge.Add({{"stage", stage_name}, {"name", k}}).Set(v);
    report.stages.push_back(stage_report);
    if (options.stop_after_steps > 0 && global_step >= options.stop_after_steps) break;
  }
  report.final_model_dir = (std::filesystem::path(spec.output_dir()) / "final").string();
  absl::Status saved = model::save_hf_model(policy, report.final_model_dir);
  if (!saved.ok()) return saved;
  return report;
}

std::string format_report(const JobReport& report) {
  std::string out = absl::StrFormat("%-10s %-8s %-26s %10s %10s\n", "stage", "trainer", "held-out metric", "before", "after");
  for (const auto& s : report.stages) {
    for (const auto& [name, after] : s.after) {
      auto it = s.before.find(name);
      out += absl::StrFormat("%-10s %-8s %-26s %10.4f %10.4f\n", s.stage, s.trainer, name,
                             it == s.before.end() ? NAN : it->second, after);
    }
  }
  return out;
}

}  // namespace aln::engine
