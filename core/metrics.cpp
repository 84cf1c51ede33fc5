#include "core/metrics.h"

#include <mutex>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"

namespace aln {

MetricsRegistry::MetricsRegistry(Labels constant_labels)
    : constant_labels_(std::move(constant_labels)), registry_(std::make_shared<prometheus::Registry>()) {}

prometheus::Family<prometheus::Gauge>& MetricsRegistry::gauge_family(const std::string& name, const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = gauges_.find(name);
  if (it != gauges_.end()) return *it->second;
  auto& family = prometheus::BuildGauge().Name(name).Help(help).Labels(constant_labels_).Register(*registry_);
  gauges_[name] = &family;
  return family;
}

prometheus::Family<prometheus::Gauge>& MetricsRegistry::per_rank_gauge_family(const std::string& name,
                                                                              const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = gauges_.find(name);
  if (it != gauges_.end()) return *it->second;
  Labels labels = constant_labels_;
  labels.erase("rank");
  auto& family = prometheus::BuildGauge().Name(name).Help(help).Labels(labels).Register(*registry_);
  gauges_[name] = &family;
  return family;
}

prometheus::Family<prometheus::Counter>& MetricsRegistry::counter_family(const std::string& name,
                                                                         const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counters_.find(name);
  if (it != counters_.end()) return *it->second;
  auto& family = prometheus::BuildCounter().Name(name).Help(help).Labels(constant_labels_).Register(*registry_);
  counters_[name] = &family;
  return family;
}

prometheus::Family<prometheus::Histogram>& MetricsRegistry::histogram_family(const std::string& name,
                                                                             const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = histograms_.find(name);
  if (it != histograms_.end()) return *it->second;
  auto& family = prometheus::BuildHistogram().Name(name).Help(help).Labels(constant_labels_).Register(*registry_);
  histograms_[name] = &family;
  return family;
}

prometheus::Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  return gauge_family(name, help).Add(labels);
}

prometheus::Counter& MetricsRegistry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  return counter_family(name, help).Add(labels);
}

std::string MetricsRegistry::serialize() const {
  prometheus::TextSerializer serializer;
  std::ostringstream out;
  serializer.Serialize(out, registry_->Collect());
  return out.str();
}

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, std::string host, int port)
    : exposer_(std::move(exposer)), host_(std::move(host)), port_(port) {}

MetricsServer::~MetricsServer() = default;

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& host, int port,
                                                                    const MetricsRegistry& registry) {
  return start(host, port, std::shared_ptr<prometheus::Collectable>(registry.registry()));
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::start(
    const std::string& host, int port, std::shared_ptr<prometheus::Collectable> collectable) {
  const std::string address = absl::StrCat(host, ":", port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, ": ", e.what(),
                                               "; choose another metrics.port (0 picks a free one)"));
  }
  exposer->RegisterCollectable(collectable);
  const auto ports = exposer->GetListeningPorts();
  const int bound = ports.empty() ? port : static_cast<int>(ports.front());
  auto server = std::unique_ptr<MetricsServer>(new MetricsServer(std::move(exposer), host, bound));
  server->served_ = std::move(collectable);
  return server;
}

std::string MetricsServer::url() const { return absl::StrCat("http://", host_, ":", port_, "/metrics"); }

}  // namespace aln
