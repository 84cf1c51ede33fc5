#include "trainers/engine/engine.h"

#include <sys/resource.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/config/job_config.h"
#include "core/fingerprint.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/model_config.h"
#include "core/optim/optimizer.h"
#include "core/status.h"
#include "distributed/placement.h"
#include "trainers/controllable/control_tokens.h"
#include "trainers/dpo/pair_logprobs.h"
#include "trainers/engine/checkpoint.h"
#include "trainers/engine/coordinator.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/evaluate.h"
#include "trainers/engine/examples.h"
#include "trainers/engine/job_outputs.h"
#include "trainers/engine/job_setup.h"
#include "trainers/engine/meters.h"
#include "trainers/engine/overlap.h"
#include "trainers/engine/pipeline.h"
#include "trainers/engine/pipeline_job.h"
#include "trainers/engine/progress.h"
#include "trainers/engine/reference_cache.h"
#include "trainers/engine/reference_role.h"
#include "trainers/engine/reward_role.h"
#include "trainers/engine/run_log.h"
#include "trainers/engine/sharded_adamw.h"
#include "trainers/engine/stage_setup.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

optim::ScheduleKind schedule_kind(aln::v1::Schedule s) {
  if (s == aln::v1::LINEAR) return optim::ScheduleKind::kLinear;
  if (s == aln::v1::CONSTANT) return optim::ScheduleKind::kConstant;
  return optim::ScheduleKind::kCosine;
}

double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux reports KiB
}

}  // namespace

absl::StatusOr<JobReport> run_job(const aln::v1::JobSpec& spec, const RunOptions& options, const Logger& log,
                                  MetricsRegistry& metrics) {
  absl::Status supported = check_supported(spec);
  if (!supported.ok()) return supported;
  if (spec.runtime().threads() > 0) at::set_num_threads(spec.runtime().threads());
  auto encoder = load_text_encoder(spec.model().tokenizer(), spec.model().chat_format());
  if (!encoder.ok()) return encoder.status();
  const int64_t pad_id = (*encoder)->pad_id();
  const std::string fingerprint = spec_fingerprint(spec);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(spec.parallel().timeout_s() * 1000));
  const auto startup = config::startup_timeout(spec);  // the communicator splits below
  // The policy's grid: world rank = replica * pipeline_parallel + stage. The data-parallel group
  // is one stage's replicas (gradients are summed there); the pipeline group one replica's stages.
  const aln::v1::GridSpec& grid = spec.parallel().policy();
  trainers::TrainerRegistry registry("trainer");
  trainers::register_all(registry);
  // Roles: the policy's grid, then (placement: separate) the reference's ranks and the reward
  // models' ranks. Checked before anything is loaded.
  const config::SeparateRoles roles = config::separate_roles(spec);
  const auto& ref_grid = spec.parallel().reference();
  const auto& reward_grid = spec.parallel().reward();
  const bool own_coordinator = spec.parallel().coordinator() == aln::v1::OWN_RANK;
  auto layout = dist::plan_layout(
      {grid.data_parallel(), grid.pipeline_parallel()}, {ref_grid.data_parallel(), ref_grid.pipeline_parallel()},
      {reward_grid.data_parallel(), reward_grid.pipeline_parallel()}, spec.parallel().placement() == aln::v1::SEPARATE,
      {roles.reference, roles.reward, own_coordinator}, options.comm != nullptr ? options.comm->size() : 1);
  if (!layout.ok()) return layout.status();
  // Reading or preparing data, loading a model or computing a whole cache on another rank may take long.
  const auto long_wait = std::max(timeout, std::chrono::milliseconds(30 * 60 * 1000));
  // With a coordinator of its own, world rank 0 only serves the policy's first rank (world rank 1);
  // the other ranks run the job below on a communicator without it, numbered from 0 as usual.
  std::unique_ptr<dist::Communicator> coordinator_channel, workers;
  dist::Communicator* comm = options.comm;
  if (own_coordinator) {
    const bool coordinator = options.comm->rank() == 0;
    coordinator_channel = comm->split(0, options.comm->rank(), startup);
    workers = comm->split(coordinator ? 1 : 0, options.comm->rank(), startup);
    if (coordinator) return run_coordinator(spec, coordinator_channel.get(), 1, timeout, log, metrics);
    comm = workers.get();
    layout = layout->workers();
  }
  const int world_size = comm != nullptr ? comm->size() : 1;
  const int world_rank = comm != nullptr ? comm->rank() : 0;
  const bool lead_reads = spec.parallel().data_reader() == aln::v1::LEAD && world_size > 1;
  std::unique_ptr<dist::Communicator> role_comm, frozen_comm, service_comm, weights_comm;
  dist::Communicator* policy_world = comm;  // the policy's ranks
  std::optional<RemoteReference> remote;
  std::optional<RemoteRewards> rewards;
  if (layout->separate) {
    const dist::Role role = layout->role_of(world_rank);
    const int index = layout->index_in_role(world_rank);
    // Every rank takes part in every split, in this order: its role's ranks; the policy's and the
    // reference's ranks (the reference protocol's collectives); a channel for reward requests.
    role_comm = comm->split(static_cast<int>(role), world_rank, startup);
    frozen_comm = comm->split(role == dist::Role::kReward ? 1 : 0, world_rank, startup);
    service_comm = comm->split(0, world_rank, startup);
    const bool sends_or_takes_weights = world_rank == 0 || role == dist::Role::kReference;
    weights_comm = comm->split(sends_or_takes_weights ? 0 : 1, world_rank, startup);
    // A server answers its policy ranks one at a time, so a request may wait behind one from each
    // of the others: its timeout grows with the clients per server.
    auto per_request = [&](int servers) {
      const int s = std::max(1, servers);
      return timeout * ((layout->policy_ranks + s - 1) / s);
    };
    const RewardPlacement reward_placement{service_comm.get(),
                                           layout->policy_ranks,
                                           layout->first_of(dist::Role::kReward),
                                           layout->reward_ranks,
                                           per_request(layout->reward_ranks),
                                           long_wait};
    if (role == dist::Role::kReward) {
      absl::Status served = run_reward_role(spec, reward_placement, index, log, metrics);
      if (!served.ok()) return served;
      return JobReport{};
    }
    if (layout->reference_ranks > 0) {
      remote = RemoteReference{frozen_comm.get(),
                               sends_or_takes_weights ? weights_comm.get() : nullptr,
                               layout->reference_ranks,
                               long_wait,
                               service_comm.get(),
                               layout->first_of(dist::Role::kReference),
                               layout->policy_ranks,
                               per_request(layout->reference_ranks),
                               lead_reads};
    }
    if (role == dist::Role::kReference) {
      absl::Status served = run_reference_role(spec, *remote, index, log);
      if (!served.ok()) return served;
      return JobReport{};
    }
    if (layout->reward_ranks > 0) rewards.emplace(reward_placement, world_rank);
    policy_world = role_comm.get();
    // (Numbered as mpirun numbers them, the coordinator's own rank included.)
    const int shift = own_coordinator ? 1 : 0;
    if (layout->reference_ranks > 0) {
      log.info("placement separate: the reference runs on world ranks %d..%d",
               shift + layout->first_of(dist::Role::kReference), shift + layout->first_of(dist::Role::kReward) - 1);
    }
    if (layout->reward_ranks > 0) {
      log.info(
          "placement separate: the reward models run on world ranks %d..%d (policy rank r asks world rank %d + r %% "
          "%d)",
          shift + layout->first_of(dist::Role::kReward), shift + layout->world() - 1,
          shift + layout->first_of(dist::Role::kReward), layout->reward_ranks);
    }
  }
  std::unique_ptr<dist::Communicator> dp_comm, pp_comm;
  std::optional<Pipeline> pipeline;
  if (grid.pipeline_parallel() > 1) {
    absl::Status ok = check_pipeline_supported(spec);
    if (!ok.ok()) return ok;
    const int replica = world_rank / grid.pipeline_parallel(), stage_index = world_rank % grid.pipeline_parallel();
    dp_comm = policy_world->split(stage_index, replica, startup);
    pp_comm = policy_world->split(replica, stage_index, startup);
    pipeline.emplace(pp_comm.get(), timeout);
  }
  const DataParallel dp(pipeline ? dp_comm.get() : policy_world, timeout);
  const DataParallel world(policy_world, timeout);  // every policy rank
  // World rank 0 (replica 0, first stage) writes the logs, checkpoints and the final model, or sends
  // them to the coordinator's own process.
  const bool lead = world_rank == 0;
  // A checkpoint save on rank 0 may take much longer than a collective; the others wait this long
  // for its verdict. Rank 0 itself uses the normal timeout: when it has saved, the others are
  // already waiting, so a peer that stopped (or died) during the save is found as fast as anywhere.
  const auto save_timeout = lead ? timeout : std::max(timeout, std::chrono::milliseconds(30 * 60 * 1000));

  const std::string checkpoint_dir = spec.checkpoint().dir().empty()
                                         ? (fs::path(spec.output_dir()) / "checkpoints").string()
                                         : spec.checkpoint().dir();
  CheckpointManager checkpoints(checkpoint_dir, spec.checkpoint().keep_last());
  std::unique_ptr<JobOutputs> outputs;
  RemoteOutputs* to_coordinator = nullptr;
  if (lead && own_coordinator) {
    auto remote_outputs = std::make_unique<RemoteOutputs>(coordinator_channel.get(), 0, timeout, long_wait);
    to_coordinator = remote_outputs.get();
    outputs = std::move(remote_outputs);
  } else if (lead) {
    outputs = std::make_unique<LocalOutputs>(
        spec, checkpoint_dir, spec.metrics().progress_bar() ? ProgressStyle::kBar : ProgressStyle::kLines);
  }
  std::optional<LoadedCheckpoint> resumed;
  if (options.resume == Resume::kFromLatest) {
    std::optional<std::string> latest = checkpoints.latest(log);
    if (!latest) {
      log.warning("--resume: no complete checkpoint in %s; starting from the beginning", checkpoint_dir);
    } else {
      auto loaded = CheckpointManager::load(*latest);
      if (!loaded.ok()) return loaded.status();
      if (loaded->state.spec_fingerprint != fingerprint) {
        return absl::FailedPreconditionError(
            absl::StrCat(*latest,
                         " was written by a job with a different model, seed, stages or eval settings; resume with the "
                         "job file that started the run, or start afresh without --resume"));
      }
      if (dp.sum(static_cast<double>(loaded->state.global_step)) !=
          static_cast<double>(loaded->state.global_step) * dp.size()) {
        return absl::FailedPreconditionError(
            absl::StrCat("the ranks found different latest checkpoints (this one: ", *latest,
                         "); put checkpoint.dir on a file system every rank shares"));
      }
      resumed = std::move(*loaded);
      set_cpu_rng_state(resumed->rng);
      log.info("resuming from %s (step %d, stage %s at step %d)", resumed->path, resumed->state.global_step,
               resumed->state.stage_name, resumed->state.stage_step);
    }
  } else if (checkpoints.latest(log)) {
    log.warning("%s holds checkpoints of an earlier run; new ones replace them (use --resume to continue that run)",
                checkpoint_dir);
  }

  // A pipeline stage reads only its own tensors from a Hugging Face directory (model.path); random
  // init and checkpoints (which hold the whole model) are cut after loading.
  std::vector<int64_t> stage_bounds;
  absl::StatusOr<model::DecoderModel> policy_or = absl::UnknownError("no policy");
  if (resumed) {
    policy_or = std::move(resumed->policy);
  } else if (pipeline && !spec.model().path().empty()) {
    auto config = model::load_hf_config((fs::path(spec.model().path()) / "config.json").string());
    if (!config.ok()) return config.status();
    auto bounds = pipeline_stage_bounds(*config, grid);
    if (!bounds.ok()) return bounds.status();
    stage_bounds = *bounds;
    policy_or =
        model::load_hf_stage(spec.model().path(), stage_bounds[pipeline->stage()], stage_bounds[pipeline->stage() + 1]);
    if (policy_or.ok()) {
      log.info("pipeline stage %d: read %d tensors (layers [%d, %d)) of %s", pipeline->stage(),
               policy_or->tensors().size(), policy_or->first_layer(), policy_or->end_layer(), spec.model().path());
    }
  } else {
    policy_or = initial_policy(spec, **encoder);
  }
  if (!policy_or.ok()) return policy_or.status();
  model::DecoderModel policy = std::move(*policy_or);
  // Control tokens of the controllable method (after the vocabulary, always in the same order).
  const int control_levels = trainers::controllable::job_control_levels(spec);
  if (control_levels > 0) (*encoder)->add_special_tokens(trainers::controllable::control_token_names(control_levels));
  // (Added after the policy is made, so a from-scratch config sized for the tokenizer stays valid.)
  if (policy.config().vocab_size < (*encoder)->vocab_size()) {
    // New embedding rows for added tokens (control tokens) start at the mean of the existing ones.
    log.info("policy vocabulary %d -> %d rows for added tokens", policy.config().vocab_size, (*encoder)->vocab_size());
    policy.resize_vocabulary((*encoder)->vocab_size());
  }
  dp.broadcast(policy.tensors());  // identical start on every rank, whatever each one loaded
  // The whole model's count, also where this rank holds one stage.
  int64_t policy_parameters = 0;
  for (const auto& [name, shape] : model::DecoderModel::expected_shapes(policy.config())) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    policy_parameters += n;
  }
  log.info("policy: %s, %.2fM parameters", policy.config().model_type, policy_parameters / 1e6);
  if (pipeline) {
    if (stage_bounds.empty()) {
      auto bounds = pipeline_stage_bounds(policy.config(), grid);
      if (!bounds.ok()) return bounds.status();
      stage_bounds = *bounds;
    }
    const int st = pipeline->stage();
    if (policy.is_whole()) policy = std::move(policy).stage(stage_bounds[st], stage_bounds[st + 1]);
    log.info("pipeline: %d stages over layers %s (%s schedule); %d data-parallel replica(s)", pipeline->stages(),
             describe_bounds(stage_bounds), aln::v1::PipelineSchedule_Name(grid.schedule()), dp.size());
  }

  // Rank 0 writes the logs, checkpoints and the final model; every rank computes the same numbers.
  const int64_t resumed_step = resumed ? resumed->state.global_step : 0;
  if (outputs) {
    absl::Status opened = outputs->open(resumed_step);
    if (!opened.ok()) return opened;
  }

  Meters meters(metrics);
  // Static facts the dashboards need: FLOP estimates (about 6 x parameters per token) and MFU, and
  // the "a rank is missing" alert (series per rank vs the ranks the job was started with).
  metrics.gauge("aln_model_parameters", "Parameters of the policy").Set(static_cast<double>(policy_parameters));
  metrics.gauge("aln_data_parallel_size", "Data-parallel ranks of the job").Set(dp.size());
  prometheus::Gauge& overlap_share = metrics.gauge(
      "aln_gradient_overlap_share", "Share of gradient bytes whose sum over ranks started during backward");
  prometheus::Gauge& optimizer_bytes =
      metrics.gauge("aln_optimizer_state_bytes", "AdamW moment bytes held by this rank (ZeRO-1 shards them)");

  JobReport report;
  if (resumed) {
    report.resumed_from = resumed->path;
    report.stages = resumed->state.finished;
  }
  int64_t global_step = resumed ? resumed->state.global_step : 0;
  const auto stages = config::effective_stages(spec);
  if (remote) announce_first_stage(*remote, resumed ? resumed->state.stage_index : 0);
  for (size_t s = 0; s < stages.size(); ++s) {
    if (resumed && static_cast<int64_t>(s) < resumed->state.stage_index) continue;  // done before the checkpoint
    const bool resuming = resumed && static_cast<int64_t>(s) == resumed->state.stage_index;
    const aln::v1::StageSpec& stage = stages[s];
    const std::string method = config::method_name(stage.trainer());
    const std::string stage_name = stage.name().empty() ? absl::StrCat("stage", s + 1) : stage.name();
    auto trainer_or = registry.create(method, stage);
    if (!trainer_or.ok()) return trainer_or.status();
    trainers::Trainer& trainer = **trainer_or;
    const trainers::Needs needs = trainer.needs();
    const Labels labels{{"stage", stage_name}, {"trainer", method}};
    meters.skipped.Add(labels);  // exported at 0 from the start, so dashboards and alerts see the series

    // Reward models with score heads (rollout-based trainers score their samples with them): loaded
    // here, or on the reward ranks with stand-ins here that ask them.
    std::vector<model::DecoderModel> reward_models;
    std::vector<std::unique_ptr<trainers::RewardModel>> reward_scorers;
    if (rewards && stage.reward_models_size() > 0) {
      auto remote_models = rewards->open_stage(static_cast<int64_t>(s), stage);
      if (!remote_models.ok()) return remote_models.status();
      reward_scorers = std::move(*remote_models);
    } else {
      for (const auto& rm : stage.reward_models()) {
        auto loaded = model::load_hf_model(rm.path());
        if (!loaded.ok()) {
          return absl::InvalidArgumentError(absl::StrCat("reward_models: ", rm.name().empty() ? rm.path() : rm.name(),
                                                         ": ", loaded.status().message()));
        }
        reward_models.push_back(std::move(*loaded));
      }
      for (const auto& rm : reward_models) reward_scorers.push_back(std::make_unique<trainers::LocalRewardModel>(rm));
    }
    std::vector<const trainers::RewardModel*> reward_ptrs;
    for (const auto& rm : reward_scorers) reward_ptrs.push_back(rm.get());
    DataSource source;
    if (lead_reads && policy_world->size() > 1) source = DataSource{policy_world, long_wait, {}};
    if (to_coordinator != nullptr && spec.parallel().data_reader() == aln::v1::LEAD) {
      source.fetch = [to_coordinator, s] { return to_coordinator->stage_data(static_cast<int64_t>(s)); };
    }
    auto prepared = prepare_stage_data(spec, stage, s, stage_name, trainer, **encoder, policy, reward_ptrs, lead,
                                       resuming, log, source);
    if (!prepared.ok()) return prepared.status();
    StageData* data = &prepared->data;
    const std::map<std::string, double>& counters = prepared->counters;
    const std::map<std::string, double>& eval_counters = prepared->eval_counters;
    meters.data.Add({{"stage", stage_name}, {"outcome", "read"}}).Set(static_cast<double>(data->rows));
    meters.data.Add({{"stage", stage_name}, {"outcome", "skipped"}}).Set(static_cast<double>(data->skipped));
    meters.data.Add({{"stage", stage_name}, {"outcome", "truncated"}}).Set(static_cast<double>(data->truncated));
    for (const auto& [name, value] : counters) meters.data.Add({{"stage", stage_name}, {"outcome", name}}).Set(value);
    log.info("stage %s (%s): %d train / %d eval examples (%d rows read, %d skipped, %d truncated)", stage_name, method,
             data->train.size(), data->eval.size(), data->rows, data->skipped, data->truncated);

    // The frozen reference: a given checkpoint, or the policy as the stage starts. Cached mode
    // computes its log-probs once (or finds them on disk) and drops the model; on-the-fly keeps it.
    const auto& opt = stage.optimizer();
    const int64_t micro = opt.micro_batch_size();
    std::optional<model::DecoderModel> reference;
    std::string reference_key;
    // With the reference on its own ranks, per-pair sums always come from them up front; per-token
    // log-probs of what the trainer samples, each step.
    const bool remote_reference = remote && served_by_reference_ranks(needs);
    const bool remote_each_step = remote_reference && served_each_step(needs);
    const bool on_the_fly =
        needs.reference_model || (stage.reference().mode() == aln::v1::ON_THE_FLY && !remote_reference);
    if (needs.reference_model && stage.reference().mode() != aln::v1::ON_THE_FLY && !remote_each_step) {
      log.info("stage %s: %s needs the reference's full distributions; the reference runs on the fly", stage_name,
               method);
    }
    if (needs.reference_logprobs) {
      const auto ref_start = Clock::now();
      if (resuming && resumed->reference) {
        reference = std::move(resumed->reference);
      } else if (!stage.reference().path().empty()) {
        if (!remote_each_step) {
          auto loaded = model::load_hf_model(stage.reference().path());
          if (!loaded.ok()) return loaded.status();
          reference = std::move(*loaded);
        }
      } else if (!(resuming && !on_the_fly) && (!remote_reference || remote_each_step)) {
        // Served each step, the copy is world rank 0's to send (and keep for checkpoints); the other
        // policy ranks need at most its output projection (hidden-state trainers).
        if (!remote_each_step || lead || needs.reference_hidden_states_only) reference = policy.to(at::kFloat);
      }
      // Pipelined: the reference is cut like the policy and its passes run through the stages.
      if (pipeline && reference && reference->is_whole()) {
        const int st = pipeline->stage();
        reference = std::move(*reference).stage(stage_bounds[st], stage_bounds[st + 1]);
      }
      if (!on_the_fly) {
        if (resuming && resumed->state.reference_cache_key.empty()) {
          return absl::FailedPreconditionError(absl::StrCat(resumed->path, " has no reference-cache key for stage ",
                                                            stage_name, "; cannot resume it mid-way"));
        }
        const std::string resume_key = resuming ? resumed->state.reference_cache_key : "";
        const RemoteReference* remote_ptr = remote_reference ? &*remote : nullptr;
        // A pipelined policy holds one stage per rank; the reference ranks get the whole model, which
        // replica 0's stages gather on world rank 0 when the weights are to be sent.
        std::function<std::optional<model::DecoderModel>()> whole_model;
        if (remote_reference && pipeline) {
          whole_model = [&]() -> std::optional<model::DecoderModel> {
            if (!dp.lead()) return std::nullopt;
            optim::TensorMap weights = pipeline->gather_to_first(policy.tensors());
            if (!lead) return std::nullopt;
            auto made = model::DecoderModel::from_tensors(policy.config(), std::move(weights));
            ALN_THROW_IF_ERROR(made.status());
            return std::move(*made);
          };
        }
        auto key = reference ? fill_reference_logprobs(spec, stage, *reference, *data, micro, pad_id, resume_key, dp,
                                                       log, pipeline ? &*pipeline : nullptr, remote_ptr, whole_model)
                             : fill_reference_logprobs(spec, stage, policy, *data, micro, pad_id, resume_key, dp, log,
                                                       pipeline ? &*pipeline : nullptr, remote_ptr, whole_model);
        if (!key.ok()) return key.status();
        reference_key = *key;
        reference.reset();
      } else if (resuming && !reference && stage.reference().path().empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat(resumed->path, " holds no reference model for stage ", stage_name, "; cannot resume it"));
      }
      meters.phase.Add({{"stage", stage_name}, {"phase", "reference"}}).Set(since(ref_start));
    }
    // Served each step by the reference ranks: world rank 0's copy goes to them (when it exists
    // nowhere else, rank 0 keeps it for checkpoints; the other policy ranks drop theirs). Trainers
    // that take hidden states keep the reference's output projection here (from the copy, or read
    // with the last layer from reference.path).
    ReferenceStandIns remote_parts;
    at::Tensor reference_head;
    if (remote_each_step) {
      if (needs.reference_hidden_states_only) {
        if (reference) {
          reference_head = reference->output_weight().detach().clone();
        } else {
          const std::string& path = stage.reference().path();
          auto config = model::load_hf_config((fs::path(path) / "config.json").string());
          if (!config.ok()) return config.status();
          auto last = model::load_hf_stage(path, config->num_layers - 1, config->num_layers);
          if (!last.ok()) return last.status();
          reference_head = last->output_weight().detach().clone();
        }
      }
      remote_parts = open_reference_stage(*remote, reference ? &*reference : nullptr, world_rank);
      if (!lead || !stage.reference().path().empty()) reference.reset();
      log.info("stage %s: the reference ranks answer the per-token %s requests", stage_name,
               needs.reference_hidden_states_only   ? "hidden-state"
               : needs.reference_sentence_embeddings ? "log-prob and sentence-embedding"
                                                     : "log-prob");
    }
    const model::DecoderModel* ref_ptr = reference && !remote_each_step ? &*reference : nullptr;
    Pipeline* pp = pipeline ? &*pipeline : nullptr;
    trainers::StepContext extras;
    extras.decode = [enc = encoder->get()](const std::vector<int64_t>& ids) { return enc->decode(ids); };
    extras.eos_id = (*encoder)->eos_id();
    extras.seed = config::stage_seeds(spec, stage, s).sampling;
    extras.reward_models = reward_ptrs;
    if (remote_each_step) {
      extras.reference_token_logprobs = remote_parts.token_logprobs;
      if (needs.reference_hidden_states_only) {
        extras.reference_hidden_states = remote_parts.hidden_states;
        extras.reference_output_weight = reference_head;
      }
      if (needs.reference_sentence_embeddings) extras.reference_sentence_embeddings = remote_parts.sentence_embeddings;
    }
    extras.encode_text = [enc = encoder->get()](const std::string& text) { return enc->encode(text); };
    if (dp.size() > 1) {
      extras.sum = [&dp](at::Tensor& t) { dp.sum(t); };
      extras.sum_gradients = [&dp, deterministic = spec.parallel().deterministic()](optim::TensorMap& params) {
        dp.all_reduce_gradients(params, deterministic);
      };
    }
    // Saved with checkpoints only when it exists nowhere else (the policy as the stage started).
    const model::DecoderModel* ref_to_save = stage.reference().path().empty() && reference ? &*reference : nullptr;

    auto log_eval = [&](const char* when, int64_t step, const MetricMap& m) -> absl::Status {
      for (const auto& [k, v] : m) meters.eval.Add({{"stage", stage_name}, {"name", k}}).Set(v);
      json line = {{"stage", stage_name}, {"trainer", method},          {"when", when},
                   {"step", step},        {"global_step", global_step}, {"examples", data->eval.size()},
                   {"metrics", json(m)},  {"data", json(eval_counters)}};
      return outputs ? outputs->eval_line(line.dump()) : absl::OkStatus();
    };

    StageReport stage_report;
    stage_report.stage = stage_name;
    stage_report.trainer = method;
    if (resuming) {
      stage_report.before = resumed->state.stage_before;
    } else {
      stage_report.before = evaluate(trainer, policy, ref_ptr, data->eval, micro, pad_id, true, &extras, pp);
      absl::Status logged = log_eval("before", 0, stage_report.before);
      if (!logged.ok()) return logged;
    }

    buffer::Buffer buffer(std::move(data->train), static_cast<uint64_t>(config::stage_seeds(spec, stage, s).shuffle),
                          dp.rank(), dp.size());
    if (stage.data().length_grouping() > 1) {
      std::vector<int64_t> lengths;
      for (const auto& e : buffer.examples()) {
        lengths.push_back(
            static_cast<int64_t>(e.prompt.size() + e.response.size() + std::max(e.chosen.size(), e.rejected.size())));
      }
      buffer.group_by_length(std::move(lengths), stage.data().length_grouping());
    }
    const int64_t per_step = micro * opt.gradient_accumulation();
    const int64_t total_steps =
        opt.max_steps() > 0 ? opt.max_steps() : std::max<int64_t>(1, opt.epochs() * buffer.shard_size() / per_step);
    ShardedAdamW adamw({opt.lr(), opt.beta1(), opt.beta2(), opt.eps(), opt.weight_decay()}, dp, spec.parallel().zero1(),
                       policy.tensors());
    if (adamw.sharded()) {
      log.info("ZeRO-1: AdamW moments sharded over %d ranks (this rank holds %.1f%% of the parameters' moments)",
               dp.size(), 100.0 * adamw.owned_share());
    }
    int64_t first_step = 0;
    int64_t consecutive_bad = 0;
    if (resuming) {
      // The position counts the examples all ranks consumed together, so it means the same with a
      // different number of ranks (only the dropped remainder of an epoch may differ).
      if (resumed->state.data_parallel != dp.size()) {
        log.warning(
            "resuming a run of %d data-parallel ranks on %d: keep micro_batch_size x gradient_accumulation x "
            "ranks equal to continue with the same global batches",
            resumed->state.data_parallel, dp.size());
      }
      buffer.seek(resumed->state.position);
      if (pipeline) {
        // The checkpoint holds every stage's moments: keep this stage's.
        optim::TensorMap mine;
        for (const auto& [key, t] : resumed->optimizer) {
          const std::string name = key.substr(0, key.rfind(".exp_avg"));
          if (key == "step" || policy.tensors().count(name) > 0) mine.emplace(key, t);
        }
        adamw.load_state(mine);
      } else {
        adamw.load_state(resumed->optimizer);
      }
      const std::string trainer_dir = (fs::path(resumed->path) / "trainer").string();
      if (fs::is_directory(trainer_dir)) {
        absl::Status loaded = trainer.load_state(trainer_dir);
        if (!loaded.ok()) return loaded;
      }
      first_step = resumed->state.stage_step;
      consecutive_bad = resumed->state.consecutive_nonfinite;
    }
    policy.set_requires_grad(true);
    if (outputs) {
      absl::Status started = outputs->stage_started(stage_name, total_steps);
      if (!started.ok()) return started;
    }
    const auto stage_start = Clock::now();
    const int64_t every = spec.checkpoint().every_steps();
    for (int64_t step = first_step; step < total_steps; ++step) {
      if (options.stop_after_steps > 0 && global_step >= options.stop_after_steps) break;
      const auto step_start = Clock::now();
      double fwd = 0, bwd = 0, data_t = 0, step_loss = 0;
      int64_t tokens = 0, samples = 0;
      MetricMap step_metrics;
      // The step's micro-batches first, so each one's weight in the global mean (its normalizer
      // over the sum across micro-batches and ranks) is known before its backward pass.
      auto t0 = Clock::now();
      std::vector<std::vector<const buffer::Example*>> micro_batches;
      double normalizer_total = 0;
      std::vector<double> normalizers;
      for (int64_t a = 0; a < opt.gradient_accumulation(); ++a) {
        micro_batches.push_back(buffer.next(micro));
        normalizers.push_back(trainer.normalizer(micro_batches.back()));
        normalizer_total += normalizers.back();
        samples += static_cast<int64_t>(micro_batches.back().size());
      }
      normalizer_total = dp.sum(normalizer_total);
      data_t += since(t0);
      std::unique_ptr<OverlappedGradientSum> overlapped;
      if (pipeline) {
        // The stages run the micro-batches' passes in the schedule's order; the last one computes
        // the losses and every stage gets their numbers.
        std::vector<double> weights;
        for (double n : normalizers) weights.push_back(n / normalizer_total);
        std::vector<trainers::LossOutput> outs = pipeline->train_step(
            policy, pipeline_schedule(grid.schedule()),
            [&](int m) {
              trainers::StepContext ctx = extras;
              ctx.policy = &policy;
              ctx.reference = ref_ptr;
              ctx.pad_id = pad_id;
              ctx.step = step;
              return trainer.compute_loss(micro_batches[static_cast<size_t>(m)], ctx);
            },
            weights);
        for (size_t a = 0; a < outs.size(); ++a) {
          step_loss += outs[a].loss.item<double>() * weights[a];
          tokens += outs[a].tokens;
          for (const auto& [k, v] : outs[a].metrics) {
            step_metrics[k] += v / static_cast<double>(opt.gradient_accumulation());
          }
        }
        fwd = pipeline->stats().forward_s;
        bwd = pipeline->stats().backward_s;
        sum_tied_embedding_gradients(policy, *pipeline);
      }
      for (int64_t a = 0; a < (pipeline ? 0 : opt.gradient_accumulation()); ++a) {
        const auto& batch = micro_batches[static_cast<size_t>(a)];
        t0 = Clock::now();
        trainers::StepContext ctx = extras;
        ctx.policy = &policy;
        ctx.reference = ref_ptr;
        ctx.pad_id = pad_id;
        ctx.step = step;
        trainers::LossOutput out = trainer.compute_loss(batch, ctx);
        // In one process without accumulation the weight is exactly 1 and the loss is used as is.
        const double weight = normalizers[static_cast<size_t>(a)] / normalizer_total;
        fwd += since(t0);
        t0 = Clock::now();
        // The step's last backward sums gradient buckets over ranks while it runs (parallel.overlap).
        if (dp.size() > 1 && spec.parallel().overlap() && a + 1 == opt.gradient_accumulation()) {
          overlapped = std::make_unique<OverlappedGradientSum>(dp, policy.tensors(), spec.parallel().deterministic());
        }
        (weight == 1.0 ? out.loss : out.loss * weight).backward();
        bwd += since(t0);
        step_loss += out.loss.item<double>() * weight;
        tokens += out.tokens;
        for (const auto& [k, v] : out.metrics) step_metrics[k] += v / static_cast<double>(opt.gradient_accumulation());
      }
      t0 = Clock::now();
      optim::TensorMap& params = policy.tensors();
      const int64_t local_tokens = tokens;
      if (dp.size() > 1) {
        if (overlapped) {
          overlapped->finish();
          overlap_share.Set(overlapped->started_during_backward());
          overlapped.reset();  // removes the hooks
        } else {
          dp.all_reduce_gradients(params, spec.parallel().deterministic());
        }
        // Loss (already weighted), tokens and samples add up; trainer scalars are averaged.
        std::vector<double> v = {step_loss, static_cast<double>(tokens), static_cast<double>(samples)};
        for (const auto& [k, value] : step_metrics) v.push_back(value / dp.size());
        at::Tensor t = at::tensor(v, at::kDouble);
        dp.sum(t);
        const double* r = t.data_ptr<double>();
        step_loss = r[0];
        tokens = static_cast<int64_t>(r[1]);
        samples = static_cast<int64_t>(r[2]);
        size_t i = 3;
        for (auto& [k, value] : step_metrics) value = r[i++];
      }
      const double comm_t = since(t0);
      if (dp.size() > 1) {
        // Every rank's own numbers reach rank 0, which exports them with a rank label: a slow or
        // stalling rank shows up as the one with little communication time (the others wait for it).
        // (Only rank 0 sets them: the other ranks' series reach its /metrics with their heartbeats,
        // and a second copy of rank r's numbers would be a duplicate series there.)
        const std::vector<double> all = dp.gather({fwd + bwd, comm_t, static_cast<double>(local_tokens)});
        for (int r = 0; r < (lead ? dp.size() : 0); ++r) {
          const Labels rank_labels{{"rank", std::to_string(r)}, {"stage", stage_name}};
          meters.rank_compute.Add(rank_labels).Set(all[static_cast<size_t>(3 * r)]);
          meters.rank_communication.Add(rank_labels).Set(all[static_cast<size_t>(3 * r + 1)]);
          meters.rank_tokens.Add(rank_labels).Set(all[static_cast<size_t>(3 * r + 2)]);
        }
      }
      t0 = Clock::now();
      const double norm = pipeline ? optim::clip_grad_norm(
                                         params, opt.max_grad_norm(),
                                         [&](double local) { return pipeline->sum(local); }, tied_copy_name(policy))
                                   : optim::clip_grad_norm(params, opt.max_grad_norm());
      const double lr =
          optim::scheduled_lr(schedule_kind(opt.schedule()), opt.lr(), step, opt.warmup_steps(), total_steps,
                              opt.warmup() == aln::v1::START_AT_ZERO ? optim::WarmupStart::kStartAtZero
                                                                     : optim::WarmupStart::kFirstStepNonzero);
      const bool finite = std::isfinite(step_loss) && std::isfinite(norm);
      if (!finite) {
        // Skip the update, count it, and stop after too many in a row: diverged training should
        // fail loudly, not burn the budget producing NaNs.
        meters.skipped.Add(labels).Increment();
        if (++consecutive_bad >= opt.max_consecutive_nonfinite()) {
          return absl::InternalError(absl::StrCat("stage ", stage_name, ": ", consecutive_bad,
                                                  " consecutive non-finite steps (loss ", step_loss, ", grad norm ",
                                                  norm, "); lower optimizer.lr or check the data"));
        }
        log.warning("step %d: non-finite loss or gradient, update skipped", step + 1);
      } else {
        consecutive_bad = 0;
        adamw.step(params, lr);
        optimizer_bytes.Set(static_cast<double>(adamw.state_bytes()));
      }
      for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
      {
        trainers::StepContext ctx = extras;
        ctx.policy = &policy;
        ctx.reference = ref_ptr;
        ctx.pad_id = pad_id;
        ctx.step = step;
        for (const auto& [k, v] : trainer.after_step(ctx)) step_metrics[k] = v;
      }
      const double opt_t = since(t0);
      ++global_step;
      const double step_t = since(step_start);
      const double rss = peak_rss_bytes();
      meters.loss.Add(labels).Set(step_loss);
      meters.steps.Add(labels).Increment();
      meters.tokens.Add(labels).Increment(static_cast<double>(tokens));
      meters.samples.Add(labels).Increment(static_cast<double>(samples));
      meters.tokens_per_second.Add(labels).Set(static_cast<double>(tokens) / step_t);
      meters.samples_per_second.Add(labels).Set(static_cast<double>(samples) / step_t);
      meters.lr.Add(labels).Set(lr);
      meters.grad_norm.Add(labels).Set(norm);
      meters.memory.Add({}).Set(rss);
      for (auto [phase, secs] : {std::pair{"data", data_t},
                                 {"forward", fwd},
                                 {"backward", bwd},
                                 {"communication", comm_t},
                                 {"optimizer", opt_t}}) {
        meters.phase.Add({{"stage", stage_name}, {"phase", phase}}).Set(secs);
      }
      for (const auto& [k, v] : step_metrics) {
        meters.method.Add({{"stage", stage_name}, {"trainer", method}, {"name", k}}).Set(v);
      }
      json pipeline_line;
      if (pipeline) {
        pipeline_line =
            export_pipeline_stats(*pipeline, static_cast<int>(opt.gradient_accumulation()), stage_name, metrics, lead);
      }
      json line = {
          {"stage", stage_name},
          {"trainer", method},
          {"step", step + 1},
          {"global_step", global_step},
          {"loss", step_loss},
          {"lr", lr},
          {"grad_norm", norm},
          {"skipped", !finite},
          {"tokens", tokens},
          {"samples", samples},
          {"seconds", step_t},
          {"tokens_per_second", static_cast<double>(tokens) / step_t},
          {"phases",
           {{"data", data_t}, {"forward", fwd}, {"backward", bwd}, {"communication", comm_t}, {"optimizer", opt_t}}},
          {"peak_rss_bytes", rss},
          {"metrics", json(step_metrics)}};
      if (pipeline) line["pipeline"] = pipeline_line;
      absl::Status logged =
          outputs ? outputs->train_line(line.dump(), step + 1, step_loss, static_cast<double>(tokens) / step_t)
                  : absl::OkStatus();
      if (!logged.ok()) return logged;
      if (spec.eval().every_steps() > 0 && (step + 1) % spec.eval().every_steps() == 0) {
        logged = log_eval("periodic", step + 1,
                          evaluate(trainer, policy, ref_ptr, data->eval, micro, pad_id, true, &extras, pp));
        if (!logged.ok()) return logged;
      }
      stage_report.steps = step + 1;
      if (every > 0 && global_step % every == 0) {
        const auto ck_start = Clock::now();
        TrainingState state;
        state.global_step = global_step;
        state.stage_index = static_cast<int64_t>(s);
        state.stage_name = stage_name;
        state.stage_step = step + 1;
        state.position = buffer.position();
        state.consecutive_nonfinite = consecutive_bad;
        state.reference_cache_key = reference_key;
        state.spec_fingerprint = fingerprint;
        state.finished = report.stages;
        state.stage_before = stage_report.before;
        state.data_parallel = dp.size();
        absl::StatusOr<std::string> saved = std::string();
        optim::TensorMap optimizer_state = adamw.state();  // collective when sharded
        const model::DecoderModel* to_save = &policy;
        std::optional<model::DecoderModel> whole;
        if (pipeline && dp.lead()) {
          // Replica 0's stages send theirs to rank 0: the checkpoint holds the whole model and
          // optimizer state, so it resumes with any pipeline (or data-parallel) size.
          optim::TensorMap weights = pipeline->gather_to_first(policy.tensors());
          optimizer_state = pipeline->gather_to_first(optimizer_state);
          if (lead) {
            auto made = model::DecoderModel::from_tensors(policy.config(), std::move(weights));
            if (!made.ok()) return made.status();
            whole = std::move(*made);
            to_save = &*whole;
          }
        }
        if (lead) {
          saved = outputs->checkpoint(*to_save, ref_to_save, optimizer_state, state,
                                      [&trainer](const std::string& dir) { return trainer.save_state(dir); });
        }
        // Everyone learns whether rank 0's save worked, so a failed save stops every rank at once.
        if (world.sum(saved.ok() ? 0.0 : 1.0, save_timeout) > 0) {
          return saved.ok() ? absl::InternalError("rank 0 could not write the checkpoint (see its log)")
                            : saved.status();
        }
        meters.checkpoint_seconds.Add({}).Set(since(ck_start));
        meters.checkpoints.Add({}).Increment();
        log.debug("checkpoint %s (%.2f s)", *saved, since(ck_start));
      }
    }
    if (outputs) {
      absl::Status finished = outputs->stage_finished();
      if (!finished.ok()) return finished;
    }
    policy.set_requires_grad(false);
    stage_report.seconds = since(stage_start);
    if (outputs) {
      absl::Status finished =
          outputs->trainer_files(stage_name, [&trainer](const std::string& dir) { return trainer.finish(dir); });
      if (!finished.ok()) return finished;
    }
    if (resuming) stage_report.steps = std::max(stage_report.steps, first_step);
    stage_report.after = evaluate(trainer, policy, ref_ptr, data->eval, micro, pad_id, true, &extras, pp);
    if (remote_each_step) {
      absl::Status closed = close_reference_stage(*remote, world_rank);
      if (!closed.ok()) return closed;
    }
    absl::Status logged = log_eval("after", stage_report.steps, stage_report.after);
    if (!logged.ok()) return logged;
    report.stages.push_back(stage_report);
    if (options.stop_after_steps > 0 && global_step >= options.stop_after_steps) break;
  }
  report.final_model_dir = (fs::path(spec.output_dir()) / "final").string();
  absl::Status saved = absl::OkStatus();
  if (pipeline && !own_coordinator) {
    saved = save_pipeline_model(policy, stage_bounds, report.final_model_dir, dp.lead(), *pipeline);
  } else if (pipeline && dp.lead()) {
    // Replica 0's stages send theirs to rank 0, which sends the whole model to the coordinator.
    optim::TensorMap weights = pipeline->gather_to_first(policy.tensors());
    if (lead) {
      auto whole = model::DecoderModel::from_tensors(policy.config(), std::move(weights));
      saved = whole.ok() ? outputs->final_model(*whole, report.final_model_dir) : whole.status();
    }
  } else if (lead) {
    saved = outputs->final_model(policy, report.final_model_dir);
  }
  if (world.sum(saved.ok() ? 0.0 : 1.0, save_timeout) > 0 && saved.ok()) {
    return absl::InternalError("another rank could not write its part of the final model (see its log)");
  }
  if (!saved.ok()) return saved;
  if (remote) finish_reference_role(*remote);
  if (rewards) {
    absl::Status bye = rewards->finish();
    if (!bye.ok()) return bye;
  }
  if (outputs) {
    absl::Status reported = outputs->report(report);
    if (!reported.ok()) return reported;
  }
  return report;
}

std::string format_report(const JobReport& report) {
  std::string out =
      absl::StrFormat("%-10s %-8s %-26s %10s %10s\n", "stage", "trainer", "held-out metric", "before", "after");
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
