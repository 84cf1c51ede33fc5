#include "trainers/engine/stage_runner.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/config/job_config.h"
#include "core/model/generation.h"
#include "core/model/hf_checkpoint.h"
#include "trainers/engine/sharded_copy.h"
#include "trainers/engine/sharded_learned.h"
#include "trainers/engine/train_step.h"
#include "trainers/engine/unconsumed_rollouts.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Reward models with score heads (rollout-based trainers score their samples with them): loaded
// here, or on the reward ranks with stand-ins here that ask them.
absl::Status open_reward_models(PolicyWorker& w, StageRun& s) {
  if (w.rewards && s.spec.reward_models_size() > 0) {
    auto remote_models = w.rewards->open_stage(static_cast<int64_t>(s.index), s.spec);
    if (!remote_models.ok()) return remote_models.status();
    s.reward_scorers = std::move(*remote_models);
  } else {
    for (const auto& rm : s.spec.reward_models()) {
      auto loaded = model::load_hf_model(rm.path());
      if (!loaded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("reward_models: ", rm.name().empty() ? rm.path() : rm.name(),
                                                       ": ", loaded.status().message()));
      }
      s.reward_models.push_back(placed(w, std::move(*loaded)));
    }
    for (const auto& rm : s.reward_models) s.reward_scorers.push_back(std::make_unique<trainers::LocalRewardModel>(rm));
  }
  for (const auto& rm : s.reward_scorers) s.reward_ptrs.push_back(rm.get());
  return absl::OkStatus();
}

// The stage's examples, read here, from the lead rank or from the coordinator.
absl::Status open_data(PolicyWorker& w, StageRun& s) {
  DataSource source;
  if (w.lead_reads && w.process.policy_world->size() > 1)
    source = DataSource{w.process.policy_world, w.process.long_wait, {}};
  if (w.to_coordinator != nullptr && w.spec.parallel().data_reader() == aln::v1::LEAD) {
    RemoteOutputs* to = w.to_coordinator;
    const auto index = static_cast<int64_t>(s.index);
    source.fetch = [to, index] { return to->stage_data(index); };
  }
  std::function<model::DecoderModel()> whole_policy;
  std::shared_ptr<const trainers::PolicyCopier> copier;
  std::shared_ptr<ShardedLearnedMaker> learned;
  if (w.fsdp) {
    whole_policy = [&w] { return w.fsdp->whole(); };
    copier = std::make_shared<ShardedPolicyCopier>(*w.dp, *w.fsdp, w.spec.parallel().deterministic());
    // What a trainer learns beside the policy (HAIR's shadow reward models) is sharded as it is.
    learned = std::make_shared<ShardedLearnedMaker>(*w.dp, w.spec.parallel().deterministic());
  }
  auto prepared = prepare_stage_data(w.spec, s.spec, s.index, s.name, *s.trainer, w.encoder, *w.policy, s.reward_ptrs,
                                     w.lead, s.resuming, w.log, source, whole_policy, learned);
  if (!prepared.ok()) return prepared.status();
  if (learned && learned->kept().models > 0) {
    const ShardedLearnedMaker::Kept kept = learned->kept();
    w.log.info(
        "%s: %d models learned beside the policy, fully sharded as it is: this rank keeps %.2f MiB of their "
        "%.2f MiB of parameters (and as much of their gradients and each AdamW moment)",
        s.name, kept.models, static_cast<double>(kept.bytes) / (1 << 20),
        static_cast<double>(kept.whole_bytes) / (1 << 20));
  }
  s.prepared = std::move(*prepared);
  // A generating method's samples come from the engine's producer, which keeps its sampling
  // snapshot the way the policy is kept (sharded beside a fully sharded one).
  trainers::RolloutPlan plan = s.trainer->rollout_plan();
  if (plan.group_size > 0) {
    s.producer = std::make_unique<trainers::RolloutProducer>(std::move(plan), copier, &*w.policy);
  }
  const StageData& data = s.data();
  Meters& meters = *w.meters;
  meters.data.Add({{"stage", s.name}, {"outcome", "read"}}).Set(static_cast<double>(data.rows));
  meters.data.Add({{"stage", s.name}, {"outcome", "skipped"}}).Set(static_cast<double>(data.skipped));
  meters.data.Add({{"stage", s.name}, {"outcome", "truncated"}}).Set(static_cast<double>(data.truncated));
  for (const auto& [name, value] : s.prepared->counters) {
    meters.data.Add({{"stage", s.name}, {"outcome", name}}).Set(value);
  }
  w.log.info("stage %s (%s): %d train / %d eval examples (%d rows read, %d skipped, %d truncated)", s.name, s.method,
             data.train.size(), data.eval.size(), data.rows, data.skipped, data.truncated);
  return absl::OkStatus();
}

// What every StepContext of the stage shares: decoding, seeds, reward models, the reference ranks'
// stand-ins, and the sums over data-parallel ranks.
void fill_extras(PolicyWorker& w, StageRun& s) {
  trainers::StepContext& extras = s.extras;
  TextEncoder* enc = &w.encoder;
  extras.decode = [enc](const std::vector<int64_t>& ids) { return enc->decode(ids); };
  extras.eos_id = w.encoder.eos_id();
  extras.seed = config::stage_seeds(w.spec, s.spec, s.index).sampling;
  extras.reward_models = s.reward_ptrs;
  extras.reference = s.reference.for_trainers;  // here or on the reference ranks
  extras.encode_text = [enc](const std::string& text) { return enc->encode(text); };
  if (w.dp->size() > 1) {
    const DataParallel* dp = &*w.dp;
    extras.sum = [dp](at::Tensor& t) { dp->sum(t); };
    extras.sum_gradients = [dp, deterministic = w.spec.parallel().deterministic()](optim::TensorMap& params) {
      dp->all_reduce_gradients(params, deterministic);
    };
  }
  if (w.fsdp) {
    // Fully sharded, every decoding step's pass gathers with every rank, and in training steps each
    // rank samples for prompts of its own: the ranks decode in step until all of theirs have ended
    // (one sum over ranks a token), each keeping only its own steps' output. (Evaluation, unsplit
    // here, gives every rank the same prompts: the sum only confirms it.) With rollout ranks training
    // steps generate there instead (step_context); evaluation still generates here.
    const DataParallel* dp = &*w.dp;
    extras.generate = [dp](const model::DecoderModel& m, int64_t, const at::Tensor& ids, const at::Tensor& mask,
                           const model::GenerationOptions& options) {
      model::GenerationOptions in_step = options;
      in_step.all_ended = [dp](bool ended_here) { return dp->sum(ended_here ? 0.0 : 1.0) == 0.0; };
      return model::generate(m, ids, mask, in_step);
    };
  }
}

absl::Status log_eval(PolicyWorker& w, StageRun& s, const char* when, int64_t step, const MetricMap& m) {
  for (const auto& [k, v] : m) w.meters->eval.Add({{"stage", s.name}, {"name", k}}).Set(v);
  json line = {{"stage", s.name},
               {"trainer", s.method},
               {"when", when},
               {"step", step},
               {"global_step", w.global_step},
               {"examples", s.data().eval.size()},
               {"metrics", json(m)},
               {"data", json(s.prepared->eval_counters)}};
  return w.outputs ? w.outputs->eval_line(line.dump()) : absl::OkStatus();
}

// Rollouts the checkpoint kept (generated ahead on the rollout ranks, not yet trained on): each
// rank's own handed to its sampler; every rank goes on, or all stop (each reads only its entries).
absl::Status take_kept_rollouts(PolicyWorker& w, const std::string& trainer_dir) {
  auto kept = restore_unconsumed(trainer_dir, *w.sampler, w.world->rank(), w.world->size());
  absl::Status agreed = w.world->agree(
      kept.status(), absl::DataLossError("another policy rank could not read the checkpoint's kept rollouts"));
  if (!agreed.ok()) return agreed;
  if (*kept > 0) {
    w.log.info(
        "%d rollouts were generated before the checkpoint and not yet trained on: kept in it, used instead "
        "of generating them again",
        *kept);
  }
  return absl::OkStatus();
}

// The training set as a seeded stream over the data-parallel ranks, the step count, AdamW, and
// (resuming inside this stage) the position, moments and trainer state of the checkpoint.
absl::Status open_training(PolicyWorker& w, StageRun& s) {
  const auto& opt = s.spec.optimizer();
  const DataParallel& dp = *w.dp;
  s.buffer.emplace(std::move(s.data().train), static_cast<uint64_t>(config::stage_seeds(w.spec, s.spec, s.index).shuffle),
                   dp.rank(), dp.size());
  if (s.spec.data().length_grouping() > 1) {
    std::vector<int64_t> lengths;
    for (const auto& e : s.buffer->examples()) {
      lengths.push_back(
          static_cast<int64_t>(e.prompt.size() + e.response.size() + std::max(e.chosen.size(), e.rejected.size())));
    }
    s.buffer->group_by_length(std::move(lengths), s.spec.data().length_grouping());
  }
  const int64_t per_step = opt.micro_batch_size() * opt.gradient_accumulation();
  s.total_steps =
      opt.max_steps() > 0 ? opt.max_steps() : std::max<int64_t>(1, opt.epochs() * s.buffer->shard_size() / per_step);
  const aln::v1::ShardLevel level = config::policy_shard(w.spec);
  // (validate_job says the same with the file's line; specs built in code reach only this.)
  if (level == aln::v1::FULL && (w.pipeline || w.spec.parallel().overlap())) {
    return absl::UnimplementedError(
        "parallel.policy.shard: full is not combined with pipeline stages or parallel.overlap yet");
  }
  if (level == aln::v1::GRADIENTS && dp.size() > 1 && (w.pipeline || w.spec.parallel().overlap())) {
    return absl::UnimplementedError(
        "parallel.policy.shard: gradients is not combined with pipeline stages or parallel.overlap yet");
  }
  const Sharding sharding = w.fsdp                        ? Sharding::kFull
                            : level == aln::v1::GRADIENTS ? Sharding::kGradients
                            : level == aln::v1::OPTIMIZER ? Sharding::kOptimizer
                                                          : Sharding::kNone;
  // On a GPU one fused multi-tensor kernel per update instead of about eight launches a parameter.
  s.adamw.emplace(
      optim::AdamWOptions{opt.lr(), opt.beta1(), opt.beta2(), opt.eps(), opt.weight_decay(), !w.device.is_cpu()}, dp,
      sharding, w.policy->tensors(), w.fsdp.get());
  if (s.adamw->shards_parameters()) {
    w.log.info("FSDP: parameters, gradients and AdamW moments sharded over %d ranks (this rank holds %.1f%%)",
               dp.size(), 100.0 * s.adamw->owned_share());
  } else if (s.adamw->shards_gradients()) {
    w.log.info(
        "ZeRO-2: gradients reduce-scattered and AdamW moments sharded over %d ranks (this rank holds %.1f%% of the "
        "summed gradients and moments)",
        dp.size(), 100.0 * s.adamw->owned_share());
  } else if (s.adamw->sharded()) {
    w.log.info("ZeRO-1: AdamW moments sharded over %d ranks (this rank holds %.1f%% of the parameters' moments)",
               dp.size(), 100.0 * s.adamw->owned_share());
  }
  if (!s.resuming) return absl::OkStatus();
  const LoadedCheckpoint& resumed = *w.resumed;
  // The position counts the examples all ranks consumed together, so it means the same with a
  // different number of ranks (only the dropped remainder of an epoch may differ).
  if (resumed.state.data_parallel != dp.size()) {
    w.log.warning(
        "resuming a run of %d data-parallel ranks on %d: keep micro_batch_size x gradient_accumulation x ranks "
        "equal to continue with the same global batches",
        resumed.state.data_parallel, dp.size());
  }
  s.buffer->seek(resumed.state.position);
  if ((resumed.shards || !resumed.optimizer_file.empty()) && w.fsdp) {
    // A fully sharded run reads only its own ranges of the moments: from whichever ranks of the
    // earlier run kept them, or slices of an unsharded run's optimizer file.
    auto mine = resumed.shards ? read_shard_ranges(*resumed.shards, w.fsdp->ranges(), {".exp_avg", ".exp_avg_sq"})
                               : read_optimizer_slices(resumed.optimizer_file, w.fsdp->ranges());
    auto step = resumed.shards ? read_shard_step(*resumed.shards) : read_optimizer_step(resumed.optimizer_file);
    const absl::Status read = !mine.ok() ? mine.status() : step.status();
    // Ranks read different files: all stop if one could not (instead of waiting in the next collective).
    absl::Status agreed =
        dp.agree(read, absl::DataLossError(absl::StrCat("another rank could not read its part of ", resumed.path,
                                                        "'s optimizer state (see its log)")));
    if (!agreed.ok()) return agreed;
    if (!resumed.shards) {
      int64_t elements = 0;
      for (const auto& [key, t] : *mine) elements += t.numel();
      w.log.info("resume: each rank reads only its slices of %s (this one %.1f MB of moments)", resumed.optimizer_file,
                 static_cast<double>(elements) * 4 / 1e6);
    }
    mine->emplace("step", *step);
    s.adamw->load_local_state(*mine);
  } else {
    if (resumed.shards) {
      // Any other run: the whole moments, put together from every rank's part.
      auto whole = read_shard_whole(*resumed.shards, {".exp_avg", ".exp_avg_sq"});
      if (!whole.ok()) return whole.status();
      auto step = read_shard_step(*resumed.shards);
      if (!step.ok()) return step.status();
      w.resumed->optimizer = std::move(*whole);
      w.resumed->optimizer.emplace("step", *step);
    }
    if (w.pipeline) {
      // The checkpoint holds every stage's moments: keep this stage's.
      optim::TensorMap mine;
      for (const auto& [key, t] : resumed.optimizer) {
        const std::string name = key.substr(0, key.rfind(".exp_avg"));
        if (key == "step" || w.policy->tensors().count(name) > 0) mine.emplace(key, t);
      }
      s.adamw->load_state(mine);
    } else {
      s.adamw->load_state(resumed.optimizer);
    }
  }
  // The whole moments are this rank's own now (or its share of them): the loaded copy goes, so a
  // sharded rank does not keep the whole state for the rest of the run.
  w.resumed->optimizer.clear();
  const std::string trainer_dir = (fs::path(resumed.path) / "trainer").string();
  if (fs::is_directory(trainer_dir)) {
    absl::Status loaded = s.trainer->load_state(trainer_dir);
    if (loaded.ok() && s.producer) loaded = s.producer->load_state(trainer_dir);
    if (!loaded.ok()) return loaded;
    if (w.sampler) {
      absl::Status kept = take_kept_rollouts(w, trainer_dir);
      if (!kept.ok()) return kept;
    }
  }
  s.first_step = resumed.state.stage_step;
  s.consecutive_bad = resumed.state.consecutive_nonfinite;
  return absl::OkStatus();
}

// The stage's trainer, reward models, data, reference and shared step context, and the held-out
// metrics before training (from the checkpoint when resuming inside the stage).
absl::Status open_stage(PolicyWorker& w, StageRun& s) {
  auto trainer = w.registry.create(s.method, s.spec);
  if (!trainer.ok()) return trainer.status();
  s.trainer = std::move(*trainer);
  s.needs = s.trainer->needs();
  s.labels = {{"stage", s.name}, {"trainer", s.method}};
  w.meters->skipped.Add(s.labels);  // exported at 0 from the start, so dashboards and alerts see the series
  absl::Status ok = open_reward_models(w, s);
  if (ok.ok()) ok = open_data(w, s);
  if (ok.ok()) ok = provide_reference(w, s);
  if (!ok.ok()) return ok;
  fill_extras(w, s);
  s.report.stage = s.name;
  s.report.trainer = s.method;
  if (s.resuming) {
    s.report.before = w.resumed->state.stage_before;
    return absl::OkStatus();
  }
  s.report.before = evaluate_stage(w, s);
  return log_eval(w, s, "before", 0, s.report.before);
}

// After the last step: the trainer's files, the held-out metrics after training, the reference
// ranks' per-step service closed, the stage's report.
absl::Status close_stage(PolicyWorker& w, StageRun& s, Clock::time_point started) {
  s.trainer->before_save();  // every rank (before the lead's early returns): what its finish writes
  if (w.outputs) {
    absl::Status finished = w.outputs->stage_finished();
    if (!finished.ok()) return finished;
  }
  w.policy->set_requires_grad(false);
  s.report.seconds = since(started);
  if (w.outputs) {
    absl::Status finished =
        w.outputs->trainer_files(s.name, [&s](const std::string& dir) { return s.trainer->finish(dir); });
    if (!finished.ok()) return finished;
  }
  if (s.resuming) s.report.steps = std::max(s.report.steps, s.first_step);
  s.report.after = evaluate_stage(w, s);
  if (s.reference.remote_each_step) {
    absl::Status closed = close_reference_stage(*w.process.remote_reference, w.process.world_rank);
    if (!closed.ok()) return closed;
  }
  absl::Status logged = log_eval(w, s, "after", s.report.steps, s.report.after);
  if (!logged.ok()) return logged;
  w.report.stages.push_back(s.report);
  return absl::OkStatus();
}

}  // namespace

trainers::StepContext StageRun::step_context(const PolicyWorker& w, int64_t step) const {
  trainers::StepContext ctx = extras;
  ctx.policy = &*w.policy;
  ctx.pad_id = w.pad_id;
  ctx.step = step;
  if (w.sampler) {
    RemoteSampler* sampler = w.sampler.get();
    ctx.generate = [sampler, stage = static_cast<int64_t>(index)](
                       const model::DecoderModel& m, int64_t version, const at::Tensor& ids, const at::Tensor& mask,
                       const model::GenerationOptions& options) {
      return sampler->generate(m, stage, version, ids, mask, options);
    };
    if (sampler->asks_ahead()) {
      ctx.prefetch = [sampler, stage = static_cast<int64_t>(index)](const model::DecoderModel& m, int64_t version,
                                                                    const at::Tensor& ids, const at::Tensor& mask,
                                                                    const model::GenerationOptions& options) {
        sampler->prefetch(m, stage, version, ids, mask, options);
      };
    }
  }
  if (rollouts) {
    ctx.rollout_sink = [dump = rollouts, global_step = w.global_step + 1,
                        stage_step = step + 1](std::vector<buffer::RolloutRecord> records) {
      dump->add(std::move(records), global_step, stage_step);
    };
  }
  return ctx;
}

MetricMap evaluate_stage(PolicyWorker& w, StageRun& s) {
  // Fully sharded, every pass gathers with every rank: each rank evaluates every batch.
  return evaluate(*s.trainer, *w.policy, s.reference.for_steps, s.data().eval, s.spec.optimizer().micro_batch_size(),
                  w.pad_id, true, &s.extras, w.pp(), w.fsdp ? nullptr : &*w.dp);
}

absl::Status run_stage(PolicyWorker& w, const aln::v1::StageSpec& stage, size_t index) {
  StageRun s(stage);
  s.index = index;
  s.method = config::method_name(stage.trainer());
  s.name = stage.name().empty() ? absl::StrCat("stage", index + 1) : stage.name();
  s.resuming = w.resumed && static_cast<int64_t>(index) == w.resumed->state.stage_index;
  absl::Status ok = open_stage(w, s);
  if (ok.ok()) ok = open_training(w, s);
  if (!ok.ok()) return ok;
  w.policy->set_requires_grad(true);
  // Each policy rank that computes losses writes what its trainer samples (pipelines: the first stage).
  if (w.spec.rollouts().dump() && (!w.pipeline || w.pipeline->first())) {
    const int64_t keep_through = w.resumed ? w.resumed->state.global_step : 0;
    s.rollouts = std::make_shared<RolloutDump>(rollout_dump_path(w.spec.output_dir(), s.name, w.dp->rank()), s.name,
                                               w.dp->rank(), keep_through);
    if (w.dp->rank() == 0) {
      absl::Status trimmed = trim_other_rank_dumps(w.spec.output_dir(), s.name, w.dp->size(), keep_through);
      if (!trimmed.ok()) return trimmed;
    }
  }
  if (w.sampler) s.rollout_waited = w.sampler->waited_seconds();
  if (w.outputs) {
    absl::Status started = w.outputs->stage_started(s.name, s.total_steps);
    if (!started.ok()) return started;
  }
  const auto stage_start = Clock::now();
  s.start_rss_bytes = resident_bytes();
  const int64_t every = w.spec.checkpoint().every_steps();
  for (int64_t step = s.first_step; step < s.total_steps; ++step) {
    if (w.options.stop_after_steps > 0 && w.global_step >= w.options.stop_after_steps) break;
    const auto step_start = Clock::now();
    StepResult r = run_passes(w, s, step);
    sum_over_ranks(w, s, r);
    absl::Status done = update_policy(w, s, step, r);
    if (done.ok() && s.rollouts) done = s.rollouts->status();
    if (!done.ok()) return done;
    ++w.global_step;
    done = report_step(w, s, step, r, since(step_start));
    if (done.ok() && w.spec.eval().every_steps() > 0 && (step + 1) % w.spec.eval().every_steps() == 0) {
      done = log_eval(w, s, "periodic", step + 1, evaluate_stage(w, s));
    }
    s.report.steps = step + 1;
    if (done.ok() && every > 0 && w.global_step % every == 0) done = save_checkpoint(w, s, step);
    if (!done.ok()) return done;
  }
  if (s.rollouts && s.rollouts->written() > 0) {
    w.log.info("stage %s: %d rollout records written to %s", s.name, s.rollouts->written(), s.rollouts->path());
  }
  return close_stage(w, s, stage_start);
}

}  // namespace aln::engine
