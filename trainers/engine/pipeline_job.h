#pragma once
// The engine's pipeline-parallel pieces around Pipeline: what a pipelined job may use, how the
// policy's layers are split, the tied-embedding gradient, per-stage metrics, and the final model
// written stage by stage into one Hugging Face checkpoint.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/metrics.h"
#include "core/model/decoder.h"
#include "distributed/pipeline_schedule.h"
#include "trainers/engine/pipeline.h"

namespace aln::engine {

// Unimplemented (naming the key to change) for what pipelined jobs do not support yet.
absl::Status check_pipeline_supported(const aln::v1::JobSpec& spec);

// Stage boundaries for a model of `config`: the grid's stage_layers, else balanced by parameter
// count (embedding counted on the first stage, final norm and output projection on the last).
absl::StatusOr<std::vector<int64_t>> pipeline_stage_bounds(const model::ModelConfig& config,
                                                           const aln::v1::GridSpec& grid);
std::string describe_bounds(const std::vector<int64_t>& bounds);  // "[0, 2) [2, 4)"
dist::PipelineSchedule pipeline_schedule(aln::v1::PipelineSchedule schedule);

// With tied embeddings the first stage's embedding and the last stage's output weight are copies of
// one tensor: both get the sum of both gradients (summed over the pipeline group; middle stages
// add zeros), so the two copies take identical AdamW steps. No-op otherwise.
void sum_tied_embedding_gradients(model::DecoderModel& stage, Pipeline& pipeline);
// The name of the copy this stage holds only as the output weight (counted by the first stage in
// the gradient norm), or "".
std::string tied_copy_name(const model::DecoderModel& stage);

// Every stage's numbers of the last step, exported with `pipeline_stage` labels
// (aln_pipeline_bubble_fraction, aln_pipeline_seconds{pass}, aln_pipeline_sent_bytes,
// aln_pipeline_activations_alive_max) and returned for the step's log line.
// Collective over the pipeline group; only `exporter` (rank 0) sets the gauges (the stages' numbers
// are the same on every rank, and other ranks' series reach rank 0's /metrics too).
nlohmann::json export_pipeline_stats(Pipeline& pipeline, int micro_batches, const std::string& stage_name,
                                     MetricsRegistry& metrics, bool exporter);

// The final model as one checkpoint: every stage of replica 0 (`writer`) writes its own tensors as
// shard k of n, the first stage adds config.json and model.safetensors.index.json; the directory
// appears atomically. transformers and a job with any pipeline size load it.
absl::Status save_pipeline_model(const model::DecoderModel& stage, const std::vector<int64_t>& bounds,
                                 const std::string& dir, bool writer, Pipeline& pipeline);

}  // namespace aln::engine
