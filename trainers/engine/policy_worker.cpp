#include "trainers/engine/policy_worker.h"

#include <ATen/ATen.h>
#include <sys/resource.h>

#include <filesystem>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/config/job_config.h"
#include "core/model/device.h"
#include "core/model/hf_checkpoint.h"
#include "core/status.h"
#include "distributed/device_routed.h"
#include "distributed/dist_error.h"
#include "distributed/host_staged.h"
#include "distributed/nccl_backend.h"
#include "distributed/nccl_info.h"
#include "kernels/cuda_kernels.h"
#include "trainers/engine/job_setup.h"
#include "trainers/engine/pipeline_job.h"
#include "trainers/engine/rng_state.h"
#include "trainers/engine/sharded_start.h"
#include "trainers/engine/stage_runner.h"
#include "trainers/trainer.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// runtime.device: cuda: this rank's GPU (by its node-local rank), in the log with its free memory.
absl::Status open_device(PolicyWorker& w) {
  if (w.spec.runtime().device() != aln::v1::CUDA) return absl::OkStatus();
  auto device = model::cuda_device_for(w.options.node_local_rank);
  if (!device.ok()) {
    // What the CUDA runtime itself says, when it says more than LibTorch.
    std::string reason;
    if (kernels::cuda::compiled() && kernels::cuda::device_count(&reason) == 0 && !reason.empty()) {
      return absl::Status(device.status().code(),
                          absl::StrCat(device.status().message(), " (CUDA runtime: ", reason, ")"));
    }
    return device.status();
  }
  w.device = *device;
  auto info = kernels::cuda::device_info(w.device.index());
  if (info.ok()) {
    w.log.info("device: %s (%s), %.1f of %.1f GiB free", w.device.str(), info->name, info->free_bytes / kGiB,
               info->total_bytes / kGiB);
  } else {
    w.log.info("device: %s (%s)", w.device.str(), std::string(info.status().message()));
  }
  return absl::OkStatus();
}

// parallel.backend on this rank's device: the policy's collectives as they are (CPU, or one rank),
// through host buffers (GPU tensors over MPI, which moves host memory), or over NCCL for device
// tensors beside MPI for the rest (one GPU a rank). Every policy rank agrees before any goes on.
absl::Status open_collectives(PolicyWorker& w) {
  ProcessContext& p = w.process;
  dist::BackendFacts facts;
  facts.cuda = !w.device.is_cpu();
  facts.ranks = p.policy_world != nullptr ? p.policy_world->size() : 1;
  facts.node_ranks = w.options.node_local_size;
  facts.node_devices = facts.cuda ? static_cast<int>(at::getNumGPUs()) : 0;
  facts.nccl_built = dist::nccl_compiled();
  facts.host = dist::host_name();
  const aln::v1::Backend backend = w.spec.parallel().backend();
  const std::string wanted =
      backend == aln::v1::BACKEND_UNSPECIFIED ? "auto" : absl::AsciiStrToLower(aln::v1::Backend_Name(backend));
  auto path = dist::choose_collective_path(wanted, facts);
  if (facts.ranks > 1) {
    const DataParallel all(p.policy_world, p.startup);  // the policy ranks' first meeting: bounded as start-up
    absl::Status agreed =
        all.agree(path.status(), absl::InvalidArgumentError(absl::StrCat(
                                     "parallel.backend: ", wanted, " cannot be used on another rank (see its log)")));
    if (!agreed.ok()) return agreed;
  } else if (!path.ok()) {
    return path.status();
  }
  if (*path == dist::CollectivePath::kHostStaged) {
    w.staged_world = dist::make_host_staged(p.policy_world);
    p.policy_world = w.staged_world.get();
    if (p.world_rank == 0) {
      w.log.info(
          "collectives: GPU tensors through host buffers over %s (parallel.backend: %s; NCCL is taken when "
          "asked for: parallel.backend: nccl)",
          w.staged_world->backend_name(), wanted);
    }
  } else if (*path == dist::CollectivePath::kNccl) {
    absl::StatusOr<std::unique_ptr<dist::Communicator>> nccl = absl::UnknownError("not started");
    const absl::Status started = capture_status([&] {
      nccl = dist::make_nccl_communicator(*p.policy_world, w.device.index(), p.timeout);
      return nccl.status();
    });
    if (!started.ok()) {
      // Said here first: a rank that fails at once then waits below for the others, which may still
      // be inside NCCL's initialisation for up to a timeout.
      w.log.error("rank %d could not start NCCL on %s: %s", p.world_rank, w.device.str(),
                  std::string(started.message()));
    }
    // Twice as long as usual: the others may each spend a timeout in NCCL's initialisation first.
    const DataParallel all(p.policy_world, 2 * std::max(p.timeout, p.startup));
    absl::Status agreed =
        all.agree(started, absl::UnavailableError("another rank could not start NCCL (see its log); parallel.backend: "
                                                  "auto trains over MPI through host buffers instead"));
    if (!agreed.ok()) return agreed;
    w.staged_world = dist::make_device_routed(std::move(*nccl), p.policy_world);
    p.policy_world = w.staged_world.get();
    if (p.world_rank == 0) {
      w.log.info("collectives: %s (NCCL for GPU tensors on %d ranks, one GPU each; the host's backend for the rest)",
                 w.staged_world->backend_name(), facts.ranks);
    }
  }
  return absl::OkStatus();
}

// The data-parallel and pipeline groups of the policy's grid: world rank = replica *
// pipeline_parallel + stage.
absl::Status open_groups(PolicyWorker& w) {
  const aln::v1::GridSpec& grid = w.spec.parallel().policy();
  ProcessContext& p = w.process;
  if (absl::Status opened = open_collectives(w); !opened.ok()) return opened;
  if (grid.pipeline_parallel() > 1) {
    absl::Status ok = check_pipeline_supported(w.spec);
    if (!ok.ok()) return ok;
    const int replica = p.world_rank / grid.pipeline_parallel(), stage_index = p.world_rank % grid.pipeline_parallel();
    w.dp_comm = p.policy_world->split(stage_index, replica, p.startup);
    w.pp_comm = p.policy_world->split(replica, stage_index, p.startup);
    w.pipeline.emplace(w.pp_comm.get(), p.timeout);
  }
  w.dp.emplace(w.pipeline ? w.dp_comm.get() : p.policy_world, p.timeout);
  w.world.emplace(p.policy_world, p.timeout);  // every policy rank
  w.lead = p.world_rank == 0;
  w.lead_reads = w.spec.parallel().data_reader() == aln::v1::LEAD && p.world_size > 1;
  // A checkpoint save on rank 0 may take much longer than a collective; the others wait this long
  // for its verdict. Rank 0 itself uses the normal timeout: when it has saved, the others are
  // already waiting, so a peer that stopped (or died) during the save is found as fast as anywhere.
  w.save_timeout = w.lead ? p.timeout : std::max(p.timeout, std::chrono::milliseconds(30 * 60 * 1000));
  if (p.layout.separate && p.layout.reward_ranks > 0) w.rewards.emplace(*p.reward_placement, p.world_rank);
  if (p.rollout_placement) {
    // Asking ahead needs a thread that calls MPI beside the training thread.
    const bool ahead = w.spec.parallel().rollout().ahead() && w.options.comm_threads;
    if (w.spec.parallel().rollout().ahead() && !ahead && w.lead) {
      w.log.warning(
          "parallel.rollout.ahead: this MPI library gives no MPI_THREAD_MULTIPLE, so each rollout is asked "
          "for when it is needed (generation does not overlap training)");
    }
    w.sampler = std::make_unique<RemoteSampler>(
        *p.rollout_placement, p.world_rank,
        &w.metrics.counter("aln_rollout_wait_seconds_total",
                           "Seconds this policy rank waited for its rollout rank (weights and generation)"),
        ahead);
  }
  return absl::OkStatus();
}

// The lead's outputs (local files, or messages to the coordinator's process), and the checkpoint
// to resume from (--resume), which every rank reads.
absl::Status open_outputs_and_resume(PolicyWorker& w) {
  w.checkpoint_dir = w.spec.checkpoint().dir().empty() ? (fs::path(w.spec.output_dir()) / "checkpoints").string()
                                                       : w.spec.checkpoint().dir();
  w.checkpoints.emplace(w.checkpoint_dir, w.spec.checkpoint().keep_last());
  if (w.lead && w.process.own_coordinator) {
    auto remote =
        std::make_unique<RemoteOutputs>(w.process.coordinator_channel.get(), 0, w.process.timeout, w.process.long_wait);
    w.to_coordinator = remote.get();
    w.outputs = std::move(remote);
  } else if (w.lead) {
    w.outputs = std::make_unique<LocalOutputs>(
        w.spec, w.checkpoint_dir, w.spec.metrics().progress_bar() ? ProgressStyle::kBar : ProgressStyle::kLines);
  }
  if (w.options.resume != Resume::kFromLatest) {
    if (w.checkpoints->latest(w.log)) {
      w.log.warning("%s holds checkpoints of an earlier run; new ones replace them (use --resume to continue that run)",
                    w.checkpoint_dir);
    }
    return absl::OkStatus();
  }
  // Every rank reaches the two sums below whatever it found, so none is left in another collective.
  std::optional<std::string> latest = w.checkpoints->latest(w.log);
  absl::StatusOr<LoadedCheckpoint> loaded = absl::NotFoundError("no checkpoint");
  absl::Status problem = absl::OkStatus();
  if (latest) {
    // (A sharded start reads its own parts of the policy later, never the whole of it.)
    // (A fully sharded run reads only its own slices of an unsharded checkpoint's moments.)
    loaded = CheckpointManager::load(*latest, /*with_policy=*/!starts_sharded(w),
                                     /*whole_optimizer=*/!runs_fully_sharded(w));
    if (!loaded.ok()) {
      problem = loaded.status();
    } else if (loaded->state.spec_fingerprint != w.fingerprint) {
      problem = absl::FailedPreconditionError(
          absl::StrCat(*latest,
                       " was written by a job with a different model, seed, stages or eval settings; resume with the "
                       "job file that started the run, or start afresh without --resume"));
    }
  }
  absl::Status agreed = w.dp->agree(
      problem, absl::FailedPreconditionError("another rank could not use its latest checkpoint (see its log)"));
  if (!agreed.ok()) return agreed;
  const double step = latest ? static_cast<double>(loaded->state.global_step) : -1.0;  // -1: none
  if (w.dp->sum(step) != step * w.dp->size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ranks found different latest checkpoints (this one: ", latest ? *latest : "none",
                     "); put checkpoint.dir on a file system every rank shares"));
  }
  if (!latest) {
    w.log.warning("--resume: no complete checkpoint in %s; starting from the beginning", w.checkpoint_dir);
    return absl::OkStatus();
  }
  w.resumed = std::move(*loaded);
  for (const std::string& name : set_rng_states(w.resumed->rng)) {
    w.log.warning("%s saved the state of generator %s, which this process does not have: draws there will differ from "
               "the uninterrupted run", w.resumed->path, name);
  }
  w.log.info("resuming from %s (step %d, stage %s at step %d)", w.resumed->path, w.resumed->state.global_step,
             w.resumed->state.stage_name, w.resumed->state.stage_step);
  return absl::OkStatus();
}

// The policy's parameter count, logged.
void count_parameters(PolicyWorker& w) {
  for (const auto& [name, shape] : model::DecoderModel::expected_shapes(w.policy->config())) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    w.policy_parameters += n;
  }
  // What starting took at most (a whole start holds the whole model; a sharded start never does).
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  w.log.info("policy: %s, %.2fM parameters; peak resident memory so far %.2f MiB", w.policy->config().model_type,
             w.policy_parameters / 1e6, static_cast<double>(usage.ru_maxrss) / 1024);
}

// What a fully sharded rank keeps, in the job log.
void describe_sharding(PolicyWorker& w) {
#ifdef __GLIBC__
  // Whatever whole tensors this rank started from are free now; aln's mallopt settings keep freed
  // heap resident, so hand those pages back (what the rank holds from here on is its share).
  malloc_trim(0);
#endif
  const double mib = 1 << 20;
  const std::string embedding =
      w.fsdp->embedding_bytes() > 0
          ? absl::StrFormat("the embedding for its lookup (%.2f MiB) and ", w.fsdp->embedding_bytes() / mib)
          : std::string();
  w.log.info(
      "fully sharded over %d ranks: this rank keeps %.2f MiB of the policy's %.2f MiB (%.1f%%); a pass holds the "
      "head%s (%.2f MiB) and gathers %sa layer at a time (%.2f MiB), the next one's gather running meanwhile",
      w.dp->size(), w.fsdp->shard_bytes() / mib, w.fsdp->whole_bytes() / mib, 100.0 * w.fsdp->owned_share(),
      embedding.empty() ? " and tied embedding" : "", w.fsdp->outer_bytes() / mib, embedding,
      w.fsdp->largest_layer_bytes() / mib);
}

// The policy: from the checkpoint, a pipeline stage's own tensors of model.path, or the job's
// initial model; control tokens added; the same start on every rank; cut to this rank's stage.
absl::Status load_policy(PolicyWorker& w) {
  if (starts_sharded(w)) {
    auto started = start_sharded(w);
    if (!started.ok()) return started.status();
    if (*started) {
      count_parameters(w);
      describe_sharding(w);
      return absl::OkStatus();
    }
  }
  const aln::v1::GridSpec& grid = w.spec.parallel().policy();
  absl::StatusOr<model::DecoderModel> policy_or = absl::UnknownError("no policy");
  if (w.resumed) {
    // (Not read yet when a sharded start was planned and declined.)
    policy_or = w.resumed->policy ? std::move(*w.resumed->policy) : CheckpointManager::load_policy(w.resumed->path);
    w.resumed->policy.reset();
  } else if (w.pipeline && !w.spec.model().path().empty()) {
    // A pipeline stage reads only its own tensors from a Hugging Face directory (model.path); random
    // init and checkpoints (which hold the whole model) are cut after loading.
    auto config = model::load_hf_config((fs::path(w.spec.model().path()) / "config.json").string());
    if (!config.ok()) return config.status();
    auto bounds = pipeline_stage_bounds(*config, grid);
    if (!bounds.ok()) return bounds.status();
    w.stage_bounds = *bounds;
    const int st = w.pipeline->stage();
    policy_or = model::load_hf_stage(w.spec.model().path(), w.stage_bounds[st], w.stage_bounds[st + 1]);
    if (policy_or.ok()) {
      w.log.info("pipeline stage %d: read %d tensors (layers [%d, %d)) of %s", st, policy_or->tensors().size(),
                 policy_or->first_layer(), policy_or->end_layer(), w.spec.model().path());
    }
  } else {
    policy_or = initial_policy(w.spec, w.encoder);
  }
  if (!policy_or.ok()) return policy_or.status();
  w.policy.emplace(std::move(*policy_or));
  model::DecoderModel& policy = *w.policy;
  // The methods' special tokens (after the vocabulary, always in the same order).
  if (auto extra = trainers::job_special_tokens(w.spec); !extra.empty()) w.encoder.add_special_tokens(extra);
  // (Added after the policy is made, so a from-scratch config sized for the tokenizer stays valid.)
  if (policy.config().vocab_size < w.encoder.vocab_size()) {
    // New embedding rows for added tokens (control tokens) start at the mean of the existing ones.
    w.log.info("policy vocabulary %d -> %d rows for added tokens", policy.config().vocab_size, w.encoder.vocab_size());
    policy.resize_vocabulary(w.encoder.vocab_size());
  }
  w.dp->broadcast(policy.tensors());  // identical start on every rank, whatever each one loaded
  count_parameters(w);
  if (runs_fully_sharded(w)) {
    w.fsdp = std::make_unique<FullySharded>(*w.dp, policy, w.spec.parallel().deterministic());
    describe_sharding(w);
  }
  if (!w.pipeline) return absl::OkStatus();
  if (w.stage_bounds.empty()) {
    auto bounds = pipeline_stage_bounds(policy.config(), grid);
    if (!bounds.ok()) return bounds.status();
    w.stage_bounds = *bounds;
  }
  const int st = w.pipeline->stage();
  if (policy.is_whole()) *w.policy = std::move(policy).stage(w.stage_bounds[st], w.stage_bounds[st + 1]);
  w.log.info("pipeline: %d stages over layers %s (%s schedule); %d data-parallel replica(s)", w.pipeline->stages(),
             describe_bounds(w.stage_bounds), aln::v1::PipelineSchedule_Name(grid.schedule()), w.dp->size());
  return absl::OkStatus();
}

// Static facts the dashboards need: FLOP estimates (about 6 x parameters per token) and MFU, and
// the "a rank is missing" alert (series per rank vs the ranks the job was started with).
void open_meters(PolicyWorker& w) {
  w.meters.emplace(w.metrics);
  w.metrics.gauge("aln_model_parameters", "Parameters of the policy").Set(static_cast<double>(w.policy_parameters));
  w.metrics.gauge("aln_data_parallel_size", "Data-parallel ranks of the job").Set(w.dp->size());
  w.overlap_share = &w.metrics.gauge("aln_gradient_overlap_share",
                                     "Share of gradient bytes whose sum over ranks started during backward");
  w.optimizer_bytes =
      &w.metrics.gauge("aln_optimizer_state_bytes", "AdamW moment bytes held by this rank (ZeRO-1 shards them)");
  if (w.fsdp) {
    w.shard_bytes = &w.metrics.gauge("aln_parameter_shard_bytes",
                                     "Policy parameter bytes this rank keeps (parallel.policy.shard: full)");
    w.shard_bytes->Set(static_cast<double>(w.fsdp->shard_bytes()));
    w.gathered_peak_bytes = &w.metrics.gauge(
        "aln_gathered_layer_peak_bytes", "Most decoder-layer bytes gathered at once in the last step (shard: full)");
  }
}

// A fully sharded policy's final model, written by the lead one unit at a time as the ranks gather
// it (io::save_safetensors_streamed): no rank ever holds more than one unit whole. Every rank takes
// part in every gather, the lead too when its write has failed (the error is kept).
absl::Status save_sharded_final_model(PolicyWorker& w) {
  std::vector<io::TensorSpec> specs;
  for (const auto& [name, sharded] : w.fsdp->layout()) specs.push_back({name, at::kFloat, sharded.shape});
  bool gathered = false;
  auto gather_all = [&](const io::TensorPut* put) {
    gathered = true;
    absl::Status first = absl::OkStatus();
    w.fsdp->for_each_whole([&](const std::string& name, const at::Tensor& whole) {
      if (put == nullptr || !first.ok()) return;
      first = (*put)(name, whole.to(at::kFloat));
    });
    return first;
  };
  if (!w.lead) return gather_all(nullptr);
  absl::Status saved = model::save_hf_model_streamed(w.policy->config(), specs, w.report.final_model_dir,
                                                     [&](const io::TensorPut& put) { return gather_all(&put); });
  if (!gathered) gather_all(nullptr).IgnoreError();  // the write failed before its first tensor: the others gather
  return saved;
}

// The final model (Hugging Face directory): written by the lead, by the pipeline's stages together,
// or sent whole to the coordinator. Every rank learns whether it worked.
absl::Status save_final_model(PolicyWorker& w) {
  w.report.final_model_dir = (fs::path(w.spec.output_dir()) / "final").string();
  absl::Status saved = absl::OkStatus();
  if (w.pipeline && !w.process.own_coordinator) {
    saved = save_pipeline_model(*w.policy, w.stage_bounds, w.report.final_model_dir, w.dp->lead(), *w.pipeline);
  } else if (w.pipeline) {
    auto whole = gather_whole_policy(w);
    if (!whole.ok()) {
      saved = whole.status();
    } else if (*whole) {
      saved = w.outputs->final_model(**whole, w.report.final_model_dir);
    }
  } else if (w.fsdp && !w.process.own_coordinator) {
    saved = save_sharded_final_model(w);
  } else if (w.fsdp) {  // sent whole to the coordinator's process
    const std::optional<model::DecoderModel> whole = w.fsdp->whole_on_lead();  // every rank sends its shards
    if (w.lead && whole) saved = w.outputs->final_model(*whole, w.report.final_model_dir);
  } else if (w.lead) {
    saved = w.outputs->final_model(*w.policy, w.report.final_model_dir);
  }
  return w.world->agree(saved,
                        absl::InternalError("another rank could not write its part of the final model (see its log)"),
                        w.save_timeout);
}

// model.dtype: bfloat16: the policy's passes compute in it over float32 master weights.
void set_precision(PolicyWorker& w) {
  if (compute_dtype(w) == at::kFloat) return;
  w.policy->set_compute_dtype(compute_dtype(w));
  w.log.info(
      "mixed precision: passes in %s over float32 master weights; log-probs, norms and losses in float32; "
      "the reference and the stage's reward models stored in %s (HAIR's shadow models train in float32)",
      c10::toString(compute_dtype(w)), c10::toString(compute_dtype(w)));
}

// The policy on this rank's device (runtime.device), after everything that reads or broadcasts it
// on the host. Refuses a GPU whose free memory cannot hold the weights, saying how much is asked.
absl::Status place_policy(PolicyWorker& w) {
  set_precision(w);
  if (w.device.is_cpu()) return absl::OkStatus();
  const double weights = static_cast<double>(w.policy_parameters) * 4;  // float32
  auto info = kernels::cuda::device_info(w.device.index());
  if (info.ok() && weights > static_cast<double>(info->free_bytes)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "runtime.device: cuda: the policy's float32 weights need %.2f GiB on %s, which has %.2f GiB free (of %.2f); "
        "use a smaller model, more ranks with parallel.policy.shard, or free the GPU",
        weights / kGiB, w.device.str(), info->free_bytes / kGiB, info->total_bytes / kGiB));
  }
  // Weights, gradients and AdamW's two moments: about 16 bytes a parameter before activations.
  if (info.ok() && 4 * weights > static_cast<double>(info->free_bytes)) {
    w.log.warning("device %s: weights, gradients and AdamW moments need about %.2f GiB; %.2f GiB are free",
                  w.device.str(), 4 * weights / kGiB, info->free_bytes / kGiB);
  }
  *w.policy = w.policy->to(w.device, at::kFloat);
  return absl::OkStatus();
}

}  // namespace

at::ScalarType compute_dtype(const PolicyWorker& w) { return job_compute_dtype(w.spec); }

model::DecoderModel placed(const PolicyWorker& w, model::DecoderModel m) {
  if (m.device() == w.device && m.storage_dtype() == compute_dtype(w)) return m;
  return frozen_copy(w, m);
}

model::DecoderModel frozen_copy(const PolicyWorker& w, const model::DecoderModel& m) {
  model::DecoderModel out = m.to(w.device, compute_dtype(w));
  out.set_compute_dtype(at::ScalarType::Undefined);  // stored as it computes
  return out;
}

PolicyWorker::PolicyWorker(const aln::v1::JobSpec& spec_, const RunOptions& options_, ProcessContext& process_,
                           TextEncoder& encoder_, const Logger& log_, MetricsRegistry& metrics_)
    : spec(spec_),
      options(options_),
      process(process_),
      encoder(encoder_),
      log(log_),
      metrics(metrics_),
      pad_id(encoder_.pad_id()),
      fingerprint(spec_fingerprint(spec_)) {
  trainers::register_all(registry);
}

absl::StatusOr<std::optional<model::DecoderModel>> gather_whole_policy(PolicyWorker& w) {
  if (!w.pipeline || !w.dp->lead()) return std::optional<model::DecoderModel>();
  optim::TensorMap weights = w.pipeline->gather_to_first(w.policy->tensors());
  if (!w.lead) return std::optional<model::DecoderModel>();
  auto made = model::DecoderModel::from_tensors(w.policy->config(), std::move(weights));
  if (!made.ok()) return made.status();
  return std::optional<model::DecoderModel>(std::move(*made));
}

absl::StatusOr<JobReport> run_policy_worker(PolicyWorker& w) {
  absl::Status ready = open_device(w);
  if (ready.ok()) ready = open_groups(w);
  if (ready.ok()) ready = open_outputs_and_resume(w);
  if (ready.ok()) ready = load_policy(w);
  if (ready.ok()) ready = place_policy(w);
  if (!ready.ok()) return ready;
  // Rank 0 writes the logs, checkpoints and the final model; every rank computes the same numbers.
  if (w.outputs) {
    absl::Status opened = w.outputs->open(w.resumed ? w.resumed->state.global_step : 0);
    if (!opened.ok()) return opened;
  }
  open_meters(w);
  if (w.resumed) {
    w.report.resumed_from = w.resumed->path;
    w.report.stages = w.resumed->state.finished;
    w.global_step = w.resumed->state.global_step;
  }
  const auto stages = config::effective_stages(w.spec);
  if (w.process.remote_reference) {
    announce_first_stage(*w.process.remote_reference, w.resumed ? w.resumed->state.stage_index : 0);
  }
  for (size_t s = 0; s < stages.size(); ++s) {
    if (w.resumed && static_cast<int64_t>(s) < w.resumed->state.stage_index) continue;  // done before the checkpoint
    absl::Status ran = run_stage(w, stages[s], s);
    if (!ran.ok()) return ran;
    if (w.options.stop_after_steps > 0 && w.global_step >= w.options.stop_after_steps) break;
  }
  absl::Status saved = save_final_model(w);
  if (!saved.ok()) return saved;
  if (w.process.remote_reference) finish_reference_role(*w.process.remote_reference);
  if (w.rewards) {
    absl::Status bye = w.rewards->finish();
    if (!bye.ok()) return bye;
  }
  if (w.sampler) {
    w.log.info(
        "%s: %d weight versions sent, %d found already there (%.1f MiB on the tensor channel in %.2f s); %d of %d "
        "requests asked for ahead were used, %d answers taken from the checkpoint",
        w.sampler->server_name(), w.sampler->weight_pushes(), w.sampler->weights_found(),
        static_cast<double>(w.sampler->weight_bytes_sent()) / (1 << 20), w.sampler->weight_seconds(),
        w.sampler->taken_ahead(), w.sampler->asked_ahead(), w.sampler->restored_taken());
    absl::Status bye = w.sampler->finish();
    if (!bye.ok()) return bye;
  }
  if (w.outputs) {
    absl::Status reported = w.outputs->report(w.report);
    if (!reported.ok()) return reported;
  }
  return w.report;
}

}  // namespace aln::engine
