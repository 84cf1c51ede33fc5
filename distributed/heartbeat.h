#pragma once
// Heartbeats: every rank tells rank 0 every `interval` that it is alive, with a snapshot of its own
// metrics (aln.v1.Heartbeat, serialized over MPI on a communicator of its own). Rank 0 serves the
// other ranks' metrics, merged into its own families, on the job's single /metrics endpoint (each
// series keeps the sending rank's `rank` and `role` labels), exports how old each rank's last
// heartbeat is, and reports a rank silent for longer than `timeout` — stopped, hung outside any
// collective, or on a host that vanished — through `on_lost`, which ends the job.
//
// Needs MPI_THREAD_MULTIPLE (a thread per rank calls MPI next to the training thread). RAII: the
// destructor sends the rank's last heartbeat (rank 0 waits for the others' up to `timeout`) and joins.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/metrics.h"
#include "distributed/communicator.h"
#include "prometheus/collectable.h"

namespace aln::dist {

class Heartbeats {
 public:
  struct Options {
    std::chrono::milliseconds interval{5000};
    std::chrono::milliseconds timeout{120000};  // silence longer than this is a lost rank
    std::string role = "policy";
  };

  // `channel`: a communicator for heartbeats only (every rank of the job). `own`: this rank's
  // metrics. `on_lost` (rank 0) is called once, from the heartbeat thread, with a message naming
  // the rank.
  Heartbeats(std::unique_ptr<Communicator> channel, Options options, const MetricsRegistry& own,
             std::function<void(const std::string&)> on_lost);
  ~Heartbeats();
  Heartbeats(const Heartbeats&) = delete;
  Heartbeats& operator=(const Heartbeats&) = delete;

  // Rank 0: what /metrics serves (this rank's registry merged with the other ranks' latest).
  std::shared_ptr<prometheus::Collectable> exposed() const;

 private:
  class Merged;
  void run_sender();
  void run_monitor();

  std::unique_ptr<Communicator> channel_;
  Options options_;
  const MetricsRegistry& own_;
  std::function<void(const std::string&)> on_lost_;
  std::shared_ptr<Merged> exposed_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace aln::dist
