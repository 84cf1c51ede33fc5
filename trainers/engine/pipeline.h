#pragma once
// Runs one data-parallel replica's pipeline: this rank holds one stage of the policy (a DecoderModel
// cut to a layer range) and executes its share of each step in the order pipeline_ops gives
// (GPipe or 1F1B). The trainer plugin is unchanged: every stage calls its compute_loss on the same
// micro-batch; the stage model takes its input from the previous stage and, unless it is the last,
// hands its output on and ends the pass there (model::ForwardHandedOn). Only the last stage
// computes the loss; the step shares its numbers with the other stages once they are read.
//
// Messages: activations forward with tag 2m, gradients backward with tag 2m + 1 (m = micro-batch);
// shapes are derived from the batch each stage collated itself, so variable sequence lengths need
// no shape messages. Every wait is bounded by the job's timeout, so a dead stage fails the job.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/model/decoder.h"
#include "distributed/communicator.h"
#include "distributed/pipeline_schedule.h"
#include "trainers/trainer.h"

namespace aln::engine {

// What one stage measured in one step (or evaluation pass).
struct PipelineStats {
  double forward_s = 0;   // inside forward passes, waits for input excluded
  double backward_s = 0;  // inside backward passes, waits for gradients excluded
  double idle_s = 0;      // waiting for the neighbours' activations or gradients (the bubble)
  double total_s = 0;     // the whole schedule
  double sent_bytes = 0;  // activations and gradients sent to the neighbours
  int max_alive = 0;      // micro-batches whose activations were alive at once (forward done, backward not)
  double bubble() const { return total_s > 0 ? idle_s / total_s : 0; }
};

class Pipeline {
 public:
  // `group`: this replica's stages, its rank = the stage index.
  Pipeline(dist::Communicator* group, std::chrono::milliseconds timeout) : group_(group), timeout_(timeout) {}

  int stage() const { return group_->rank(); }
  int stages() const { return group_->size(); }
  bool first() const { return stage() == 0; }
  bool last() const { return stage() + 1 == stages(); }

  // One training step: `forward(m)` runs the trainer's compute_loss on micro-batch m (with the
  // link set on `policy`); on the last stage backward starts from loss * weights[m]. Returns every
  // micro-batch's output: on the last stage as computed (detached loss, tokens, metrics, nothing
  // read on the host); on the other stages empty (no loss defined).
  std::vector<trainers::LossOutput> train_step(const model::DecoderModel& policy, dist::PipelineSchedule schedule,
                                               const std::function<trainers::LossOutput(int)>& forward,
                                               const std::vector<double>& weights);

  // One forward pass without gradients (evaluation, reference log-probs): runs `forward` with the
  // link set on `model`; returns true on the last stage, where it ran to the end.
  bool forward_only(const model::DecoderModel& model, const std::function<void()>& forward);

  // The last stage's `bytes` on every stage.
  std::string share_from_last(const std::string& bytes) const;
  // The last stage's metrics (evaluation) on every stage.
  std::map<std::string, double> share_from_last(const std::map<std::string, double>& metrics) const;
  // Sum over the stages in place (contiguous CPU tensor).
  void sum(at::Tensor& tensor) const;
  double sum(double value) const;
  // Every stage's tensors on the first stage (which returns them all; the others return {}), for
  // checkpoints that hold the whole model and optimizer state, so they resume with any pipeline size.
  std::map<std::string, at::Tensor> gather_to_first(const std::map<std::string, at::Tensor>& mine) const;
  // Every stage's `values` (same count on each), stage by stage.
  std::vector<double> gather(const std::vector<double>& values) const;

  const PipelineStats& stats() const { return stats_; }

 private:
  class Link;
  void wait(dist::Work& work, double* idle_s) const;
  dist::Communicator* group_;
  std::chrono::milliseconds timeout_;
  PipelineStats stats_;
};

}  // namespace aln::engine
