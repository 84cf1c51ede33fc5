#pragma once
// Prometheus metrics. Families are registered once at start-up and their references kept (label
// sets are small and fixed: rank, role, trainer, phase). Only `main` owns the HTTP exposer
// (MetricsServer); libraries receive a MetricsRegistry& and never open sockets.
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace aln {

using Labels = std::map<std::string, std::string>;

class MetricsRegistry {
 public:
  // `constant_labels` go on every series (for example {"job", name}).
  explicit MetricsRegistry(Labels constant_labels = {});

  // Returns the family, registering it on first use; asking again with the same name returns the
  // same family (so callers may look up instead of storing references).
  prometheus::Family<prometheus::Gauge>& gauge_family(const std::string& name, const std::string& help);
  prometheus::Family<prometheus::Counter>& counter_family(const std::string& name, const std::string& help);
  prometheus::Family<prometheus::Histogram>& histogram_family(const std::string& name, const std::string& help);
  // A family whose series carry their own `rank` label (the coordinator exporting every rank's
  // numbers): the constant labels minus `rank`.
  prometheus::Family<prometheus::Gauge>& per_rank_gauge_family(const std::string& name, const std::string& help);

  prometheus::Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  prometheus::Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});

  // The text exposition format (what /metrics serves); used by tests and by the coordinator.
  std::string serialize() const;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  Labels constant_labels_;
  std::shared_ptr<prometheus::Registry> registry_;
  // Family lookups may come from several threads (the launcher's RPC and poll threads); the
  // families themselves are thread-safe.
  std::mutex mu_;
  std::map<std::string, prometheus::Family<prometheus::Gauge>*> gauges_;
  std::map<std::string, prometheus::Family<prometheus::Counter>*> counters_;
  std::map<std::string, prometheus::Family<prometheus::Histogram>*> histograms_;
};

// Serves /metrics over HTTP for as long as it lives (RAII over prometheus::Exposer).
class MetricsServer {
 public:
  // Binds host:port (port 0 picks a free one). Fails with a message naming the address in use.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> start(const std::string& host, int port,
                                                              const MetricsRegistry& registry);
  // Serves `collectable` instead (rank 0 of a job: its registry merged with the other ranks').
  static absl::StatusOr<std::unique_ptr<MetricsServer>> start(const std::string& host, int port,
                                                              std::shared_ptr<prometheus::Collectable> collectable);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  std::string url() const;

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, std::string host, int port);
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> served_;  // the exposer holds only a weak reference
  std::string host_;
  int port_;
};

}  // namespace aln
