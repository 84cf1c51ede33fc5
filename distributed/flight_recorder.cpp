#include "distributed/flight_recorder.h"

#include "absl/strings/str_format.h"

namespace aln::dist {

void FlightRecorder::started(int64_t seq, const std::string& op, int64_t elements, const std::string& dtype) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.push_back({seq, op, elements, dtype, std::chrono::steady_clock::now()});
  while (entries_.size() > capacity_) entries_.pop_front();
}

void FlightRecorder::finished(int64_t seq) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& e : entries_) {
    if (e.seq == seq && e.done_ms < 0) {
      e.done_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - e.start).count();
    }
  }
}

std::string FlightRecorder::dump() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out = "last collectives of this rank (oldest first):";
  const auto now = std::chrono::steady_clock::now();
  for (const auto& e : entries_) {
    if (e.done_ms >= 0) {
      absl::StrAppendFormat(&out, " #%d %s %d x %s, done in %.1f ms;", e.seq, e.op, e.elements, e.dtype, e.done_ms);
    } else {
      absl::StrAppendFormat(&out, " #%d %s %d x %s, pending for %.1f ms;", e.seq, e.op, e.elements, e.dtype,
                            std::chrono::duration<double, std::milli>(now - e.start).count());
    }
  }
  if (entries_.empty()) out += " none";
  return out;
}

}  // namespace aln::dist
