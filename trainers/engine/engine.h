#pragma once
// The training engine: runs a job's stages in order, each with its trainer plugin, owning batching,
// gradient accumulation, AdamW with warm-up + schedule, clipping, the non-finite-step guard,
// reference log-probs (cached or on the fly), periodic evaluation, metrics and checkpoints.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "distributed/communicator.h"
#include "trainers/engine/report.h"

namespace aln::engine {

enum class Resume { kNo, kFromLatest };

struct RunOptions {
  Resume resume = Resume::kNo;
  // Stop after this many optimizer steps in total (0 = run the whole job); used by tests to
  // simulate an interrupted run.
  int64_t stop_after_steps = 0;
  // The policy's data-parallel group (under mpirun); null runs in one process. Its size must equal
  // parallel.policy.data_parallel.
  dist::Communicator* comm = nullptr;
  // Whether MPI lets any thread call it at any time (MPI_THREAD_MULTIPLE): rollout requests are
  // then sent ahead by a thread of their own (parallel.rollout.ahead).
  bool comm_threads = false;
  // This process's rank among the job's processes on its host: it picks the GPU (runtime.device: cuda).
  int node_local_rank = 0;
  // How many of the job's processes share this host (with the GPUs it shows: whether NCCL can give
  // each rank a GPU of its own).
  int node_local_size = 1;
};

absl::StatusOr<JobReport> run_job(const aln::v1::JobSpec& spec, const RunOptions& options, const Logger& log,
                                  MetricsRegistry& metrics);

}  // namespace aln::engine
