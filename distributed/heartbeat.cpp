#include "distributed/heartbeat.h"

#include <ATen/ATen.h>

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "aln/v1/control.pb.h"
#include "core/error.h"
#include "distributed/control_channel.h"
#include "distributed/dist_error.h"
#include "prometheus/registry.h"

namespace aln::dist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr FrameTags kTags{1, 2};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Gauges, counters and untyped values of this rank's registry (histograms stay local).
void snapshot(const prometheus::Registry& registry, aln::v1::Heartbeat* out) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    aln::v1::MetricFamilySnapshot::Kind kind;
    if (family.type == prometheus::MetricType::Gauge) {
      kind = aln::v1::MetricFamilySnapshot::GAUGE;
    } else if (family.type == prometheus::MetricType::Counter) {
      kind = aln::v1::MetricFamilySnapshot::COUNTER;
    } else if (family.type == prometheus::MetricType::Untyped) {
      kind = aln::v1::MetricFamilySnapshot::UNTYPED;
    } else {
      continue;
    }
    aln::v1::MetricFamilySnapshot* f = out->add_metrics();
    f->set_name(family.name);
    f->set_help(family.help);
    f->set_kind(kind);
    for (const prometheus::ClientMetric& m : family.metric) {
      aln::v1::MetricSample* sample = f->add_samples();
      for (const auto& label : m.label) (*sample->mutable_labels())[label.name] = label.value;
      sample->set_value(kind == aln::v1::MetricFamilySnapshot::GAUGE     ? m.gauge.value
                        : kind == aln::v1::MetricFamilySnapshot::COUNTER ? m.counter.value
                                                                         : m.untyped.value);
    }
  }
}

prometheus::MetricFamily to_family(const aln::v1::MetricFamilySnapshot& f) {
  prometheus::MetricFamily family;
  family.name = f.name();
  family.help = f.help();
  family.type = f.kind() == aln::v1::MetricFamilySnapshot::GAUGE     ? prometheus::MetricType::Gauge
                : f.kind() == aln::v1::MetricFamilySnapshot::COUNTER ? prometheus::MetricType::Counter
                                                                     : prometheus::MetricType::Untyped;
  for (const auto& sample : f.samples()) {
    prometheus::ClientMetric m;
    std::map<std::string, std::string> sorted(sample.labels().begin(), sample.labels().end());
    for (const auto& [name, value] : sorted) m.label.push_back({name, value});
    m.gauge.value = m.counter.value = m.untyped.value = sample.value();
    family.metric.push_back(std::move(m));
  }
  return family;
}

}  // namespace

// This rank's registry plus the other ranks' latest snapshots, merged by family name on every
// scrape (the text format allows each family once).
class Heartbeats::Merged final : public prometheus::Collectable {
 public:
  explicit Merged(std::shared_ptr<prometheus::Registry> own) : own_(std::move(own)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out = own_->Collect();
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < out.size(); ++i) index[out[i].name] = i;
    std::lock_guard<std::mutex> lock(mutex_);
    auto add = [&](const prometheus::MetricFamily& f) {
      auto it = index.find(f.name);
      if (it == index.end()) {
        index[f.name] = out.size();
        out.push_back(f);
      } else if (out[it->second].type == f.type) {
        out[it->second].metric.insert(out[it->second].metric.end(), f.metric.begin(), f.metric.end());
      }
    };
    for (const auto& [rank, families] : remote_) {
      for (const auto& f : families) add(f);
    }
    add(ages_);
    return out;
  }

  void set(int rank, std::vector<prometheus::MetricFamily> families) {
    std::lock_guard<std::mutex> lock(mutex_);
    remote_[rank] = std::move(families);
  }

  void set_ages(prometheus::MetricFamily ages) {
    std::lock_guard<std::mutex> lock(mutex_);
    ages_ = std::move(ages);
  }

 private:
  std::shared_ptr<prometheus::Registry> own_;
  mutable std::mutex mutex_;
  std::map<int, std::vector<prometheus::MetricFamily>> remote_;
  prometheus::MetricFamily ages_;
};

Heartbeats::Heartbeats(std::unique_ptr<Communicator> channel, Options options, const MetricsRegistry& own,
                       std::function<void(const std::string&)> on_lost)
    : channel_(std::move(channel)),
      options_(std::move(options)),
      own_(own),
      on_lost_(std::move(on_lost)),
      exposed_(std::make_shared<Merged>(own.registry())) {
  thread_ = std::thread([this] { channel_->rank() == 0 ? run_monitor() : run_sender(); });
}

std::shared_ptr<prometheus::Collectable> Heartbeats::exposed() const { return exposed_; }

Heartbeats::~Heartbeats() {
  stop_ = true;
  thread_.join();
}

void Heartbeats::run_sender() {
  const auto start = Clock::now();
  int64_t sequence = 0;
  auto next = start;
  while (true) {
    const bool last = stop_;
    if (last || Clock::now() >= next) {
      aln::v1::Heartbeat beat;
      beat.set_rank(channel_->rank());
      beat.set_role(options_.role);
      beat.set_host(host_name());
      beat.set_sequence(++sequence);
      beat.set_uptime_s(seconds(Clock::now() - start));
      beat.set_last(last);
      snapshot(*own_.registry(), &beat);
      auto frame = post_frame(*channel_, 0, kTags, beat.SerializeAsString());
      if (!frame.ok()) return;  // a heartbeat is a few KiB: never over the limit
      // Rank 0 always has a receive posted; if it is gone, mpirun ends this rank too. Until the
      // sends finish their buffers must live, so this waits (checking for shutdown meanwhile).
      while (!frame->done()) {
        // Rank 0 stopped listening: the process is ending; the unfinished Works keep the buffers
        // MPI may still read.
        if (stop_ && Clock::now() - next > options_.timeout) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      next += options_.interval;
      if (last) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Heartbeats::run_monitor() {
  const int n = channel_->size();
  struct Peer {
    std::unique_ptr<FrameReceiver> frames;
    Clock::time_point last_seen;
    std::string role = "?", host = "?";
    bool left = false;
  };
  std::vector<Peer> peers(static_cast<size_t>(n));
  const auto start = Clock::now();
  for (int r = 1; r < n; ++r) {
    peers[r].last_seen = start;
    peers[r].frames = std::make_unique<FrameReceiver>(*channel_, r, kTags);
  }
  bool reported = false;
  Clock::time_point stop_deadline{};
  while (true) {
    const auto now = Clock::now();
    bool all_left = true;
    prometheus::MetricFamily ages;
    ages.name = "aln_rank_heartbeat_age_seconds";
    ages.help = "Seconds since each rank's last heartbeat reached rank 0";
    ages.type = prometheus::MetricType::Gauge;
    for (int r = 1; r < n; ++r) {
      Peer& p = peers[r];
      while (!p.left) {
        auto arrived = p.frames->poll(options_.timeout);
        if (!arrived.ok() || !*arrived) break;  // a broken frame shows as a missing heartbeat
        aln::v1::Heartbeat beat;
        if (p.frames->parse(&beat).ok()) {
          p.last_seen = Clock::now();
          p.role = beat.role();
          p.host = beat.host();
          std::vector<prometheus::MetricFamily> families;
          for (const auto& f : beat.metrics()) families.push_back(to_family(f));
          exposed_->set(r, std::move(families));
          p.left = beat.last();
        }
        if (!p.left) p.frames->next();
      }
      all_left = all_left && p.left;
      const double age = seconds(now - p.last_seen);
      prometheus::ClientMetric m;
      m.label = {{"peer_rank", std::to_string(r)}, {"peer_role", p.role}};
      m.gauge.value = p.left ? 0.0 : age;
      ages.metric.push_back(m);
      if (!p.left && !reported && now - p.last_seen > options_.timeout) {
        reported = true;
        on_lost_(absl::StrCat("rank ", r, " (", p.role, " on ", p.host, ") sent no heartbeat for ",
                              static_cast<int64_t>(age), " s (parallel.heartbeat_s ",
                              std::chrono::duration<double>(options_.interval).count(),
                              "); it is stopped, hung or its host is unreachable"));
      }
    }
    exposed_->set_ages(std::move(ages));
    if (stop_) {
      // Wait for the others' last heartbeats (they leave at about the same time), then go: a
      // receive left posted would outlive its buffer.
      if (stop_deadline == Clock::time_point{}) stop_deadline = now + options_.timeout;
      if (all_left || now > stop_deadline) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Receives still posted (peers that never said goodbye) keep their buffers in their Works: the
  // process is ending, and MPI may still write them.
}

}  // namespace aln::dist
