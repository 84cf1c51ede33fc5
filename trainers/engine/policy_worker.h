#pragma once
// A policy rank's part of a job: its data-parallel and pipeline groups, the outputs and the resumed
// checkpoint, the policy, then each stage in turn (stage_runner.h), then the final model. The pieces
// share one PolicyWorker, built once per job; each function owns one thing.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/model/decoder.h"
#include "trainers/engine/checkpoint.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/engine.h"
#include "trainers/engine/fully_sharded.h"
#include "trainers/engine/job_outputs.h"
#include "trainers/engine/meters.h"
#include "trainers/engine/pipeline.h"
#include "trainers/engine/process_context.h"
#include "trainers/engine/report.h"
#include "trainers/engine/reward_role.h"
#include "trainers/engine/text_encoder.h"
#include "trainers/trainer.h"

namespace aln::engine {

struct PolicyWorker {
  PolicyWorker(const aln::v1::JobSpec& spec, const RunOptions& options, ProcessContext& process, TextEncoder& encoder,
               const Logger& log, MetricsRegistry& metrics);
  PolicyWorker(const PolicyWorker&) = delete;
  PolicyWorker& operator=(const PolicyWorker&) = delete;

  const aln::v1::JobSpec& spec;
  const RunOptions& options;
  ProcessContext& process;
  TextEncoder& encoder;
  const Logger& log;
  MetricsRegistry& metrics;
  trainers::TrainerRegistry registry{"trainer"};
  const int64_t pad_id;
  const std::string fingerprint;

  // Groups: one stage's replicas (gradients are summed there) and one replica's stages; `world`
  // is every policy rank. World rank 0 (replica 0, first stage) is the lead: it writes the logs,
  // checkpoints and the final model, or sends them to the coordinator's own process.
  std::unique_ptr<dist::Communicator> dp_comm, pp_comm;
  // runtime.device: where this rank's models and batches live. On GPUs the policy's collectives go
  // through host buffers over MPI (dist::make_host_staged) or, with parallel.backend: nccl, device
  // tensors over NCCL beside MPI (dist::make_device_routed): either wrapped around policy_world.
  at::Device device{at::kCPU};
  std::unique_ptr<dist::Communicator> staged_world;
  std::optional<Pipeline> pipeline;
  std::optional<DataParallel> dp, world;
  bool lead = false;
  bool lead_reads = false;  // parallel.data_reader: lead, on more than one rank
  // How long the other ranks wait for the lead's checkpoint save.
  std::chrono::milliseconds save_timeout{0};
  std::optional<RemoteRewards> rewards;
  // parallel.rollout.ranks > 0: generation on the rollout ranks (a pointer: step contexts made from a
  // const worker still send through it).
  std::unique_ptr<RemoteSampler> sampler;

  std::string checkpoint_dir;
  std::optional<CheckpointManager> checkpoints;
  std::unique_ptr<JobOutputs> outputs;      // the lead's only
  RemoteOutputs* to_coordinator = nullptr;  // the same object, when the coordinator writes
  std::optional<LoadedCheckpoint> resumed;

  std::vector<int64_t> stage_bounds;  // pipeline: the stages' layer ranges
  std::optional<model::DecoderModel> policy;
  // parallel.policy.shard: full over more than one rank: the policy's parameters (its map then holds
  // placeholders). Declared after `policy`, so it detaches before the policy goes.
  std::unique_ptr<FullySharded> fsdp;
  int64_t policy_parameters = 0;  // the whole model's, also where this rank holds one stage

  std::optional<Meters> meters;
  prometheus::Gauge* overlap_share = nullptr;
  prometheus::Gauge* optimizer_bytes = nullptr;
  prometheus::Gauge* shard_bytes = nullptr;          // shard: full: parameter bytes kept
  prometheus::Gauge* gathered_peak_bytes = nullptr;  // shard: full: layer bytes gathered at once, this step
  JobReport report;
  int64_t global_step = 0;

  Pipeline* pp() { return pipeline ? &*pipeline : nullptr; }
  // A float32 copy of the whole policy, sharing nothing with it. Collective with shard: full (every
  // policy rank of the group must call it).
  model::DecoderModel policy_copy() const { return fsdp ? fsdp->whole() : policy->to(at::kFloat); }
};

// model.dtype: the dtype passes compute in (bfloat16 for mixed precision), float32 otherwise. The
// policy keeps float32 master weights; frozen models (reference, reward models) are stored in it.
at::ScalarType compute_dtype(const PolicyWorker& w);
// A frozen model read on the host, placed where this rank trains (runtime.device) in the compute
// dtype (the model itself when it is there already).
model::DecoderModel placed(const PolicyWorker& w, model::DecoderModel m);
// A frozen copy of `m` (never sharing storage with it), placed likewise.
model::DecoderModel frozen_copy(const PolicyWorker& w, const model::DecoderModel& m);

// The whole of a policy rank's job.
absl::StatusOr<JobReport> run_policy_worker(PolicyWorker& w);

// A pipelined policy as one model on the lead: replica 0's stages send theirs to world rank 0
// (collective on those stages). The lead gets the model; every other rank nullopt.
absl::StatusOr<std::optional<model::DecoderModel>> gather_whole_policy(PolicyWorker& w);

}  // namespace aln::engine
