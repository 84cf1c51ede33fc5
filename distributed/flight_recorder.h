#pragma once
// The flight recorder: the last N collectives of a communicator (sequence number, operation, size,
// when it started, whether and when it finished). Printed with every timeout, so a hang report
// shows what this rank was doing and which collective the ranks disagree on — the first thing one
// needs when one rank is in all_reduce #812 and another in all_gather #811.
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

namespace aln::dist {

class FlightRecorder {
 public:
  explicit FlightRecorder(size_t capacity = 32) : capacity_(capacity) {}

  void started(int64_t seq, const std::string& op, int64_t elements, const std::string& dtype);
  void finished(int64_t seq);
  // "last collectives of this rank (oldest first): #11 all_reduce 4099 x float, done in 2.1 ms; ...;
  // #13 all_gather 37 x double, pending for 5000.0 ms"
  std::string dump() const;

 private:
  struct Entry {
    int64_t seq;
    std::string op;
    int64_t elements;
    std::string dtype;
    std::chrono::steady_clock::time_point start;
    double done_ms = -1;  // < 0: still pending
  };
  size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<Entry> entries_;
};

}  // namespace aln::dist
