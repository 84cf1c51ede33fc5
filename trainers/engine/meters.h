#pragma once
// The Prometheus metric families of a training run, created once per run (label sets small and
// fixed; docs/training.md lists them).
#include "core/metrics.h"

namespace aln::engine {

// The metric families of a run, created once.
struct Meters {
  explicit Meters(MetricsRegistry& m)
      : loss(m.gauge_family("aln_train_loss", "Training loss of the last optimizer step")),
        steps(m.counter_family("aln_train_steps_total", "Optimizer steps taken")),
        tokens(m.counter_family("aln_train_tokens_total", "Tokens processed in training")),
        samples(m.counter_family("aln_train_samples_total", "Examples processed in training")),
        tokens_per_second(m.gauge_family("aln_train_tokens_per_second", "Training throughput of the last step")),
        samples_per_second(m.gauge_family("aln_train_samples_per_second", "Examples per second of the last step")),
        lr(m.gauge_family("aln_train_learning_rate", "Learning rate of the last step")),
        grad_norm(m.gauge_family("aln_train_grad_norm", "Gradient norm before clipping")),
        skipped(m.counter_family("aln_train_nonfinite_steps_total", "Steps skipped as non-finite")),
        phase(m.gauge_family("aln_step_phase_seconds", "Seconds per phase of the last step")),
        method(m.gauge_family("aln_train_metric", "Method-specific training scalars")),
        eval(m.gauge_family("aln_eval_metric", "Held-out evaluation scalars")),
        data(m.gauge_family("aln_data_records", "Records per stage by outcome")),
        memory(m.gauge_family("aln_process_peak_rss_bytes", "Peak resident memory of this process")),
        checkpoint_seconds(m.gauge_family("aln_checkpoint_seconds", "Duration of the last checkpoint save")),
        checkpoints(m.counter_family("aln_checkpoints_total", "Checkpoints written")),
        rank_compute(m.per_rank_gauge_family("aln_rank_compute_seconds",
                                             "Forward + backward seconds of the last step, per data-parallel rank")),
        rank_communication(m.per_rank_gauge_family("aln_rank_communication_seconds",
                                                   "Gradient and metric reduction seconds of the last step, per rank")),
        rank_tokens(m.per_rank_gauge_family("aln_rank_tokens", "Tokens of the last step, per data-parallel rank")) {}
  prometheus::Family<prometheus::Gauge>& loss;
  prometheus::Family<prometheus::Counter>& steps;
  prometheus::Family<prometheus::Counter>& tokens;
  prometheus::Family<prometheus::Counter>& samples;
  prometheus::Family<prometheus::Gauge>& tokens_per_second;
  prometheus::Family<prometheus::Gauge>& samples_per_second;
  prometheus::Family<prometheus::Gauge>& lr;
  prometheus::Family<prometheus::Gauge>& grad_norm;
  prometheus::Family<prometheus::Counter>& skipped;
  prometheus::Family<prometheus::Gauge>& phase;
  prometheus::Family<prometheus::Gauge>& method;
  prometheus::Family<prometheus::Gauge>& eval;
  prometheus::Family<prometheus::Gauge>& data;
  prometheus::Family<prometheus::Gauge>& memory;
  prometheus::Family<prometheus::Gauge>& checkpoint_seconds;
  prometheus::Family<prometheus::Counter>& checkpoints;
  prometheus::Family<prometheus::Gauge>& rank_compute;
  prometheus::Family<prometheus::Gauge>& rank_communication;
  prometheus::Family<prometheus::Gauge>& rank_tokens;
};

}  // namespace aln::engine
