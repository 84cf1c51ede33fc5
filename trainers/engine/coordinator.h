#pragma once
// The coordinator as a process of its own (parallel.coordinator: own_rank, world rank 0). It loads
// no model and needs no device. It serves the policy's first rank:
// - the stage's examples, read and tokenized here (parallel.data_reader: lead);
// - the log lines, written to train_log.jsonl and eval.jsonl, with the progress display;
// - checkpoints and the final model, whose tensors arrive in pieces and are written here;
// - a trainer's files, and at the end the job's report, which it returns.
// /metrics and the heartbeat monitor run on world rank 0 as always (the CLI starts them), so this
// process also serves every rank's metrics and ends the job when a rank goes silent.
#include <chrono>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "distributed/communicator.h"
#include "trainers/engine/report.h"

namespace aln::engine {

// `channel`: a communicator of every rank of the job, this process its rank 0; `client`: the
// policy's first rank in it. Serves until the client's report and goodbye; `timeout` bounds each
// message after a request has started.
absl::StatusOr<JobReport> run_coordinator(const aln::v1::JobSpec& spec, dist::Communicator* channel, int client,
                                          std::chrono::milliseconds timeout, const Logger& log,
                                          MetricsRegistry& metrics);

}  // namespace aln::engine
