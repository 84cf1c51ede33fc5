#pragma once
// Terminal progress for long stages: a single rewritten line with step, loss, throughput and ETA on a
// terminal; plain periodic lines otherwise (logs, CI).
#include <chrono>
#include <cstdint>
#include <string>

namespace aln::engine {

enum class ProgressStyle { kBar, kLines, kNone };  // kNone: ranks other than 0

class Progress {
 public:
  Progress(std::string label, int64_t total, ProgressStyle style);
  void update(int64_t done, double loss, double tokens_per_second);
  void finish();

 private:
  std::string label_;
  int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
  int64_t done_ = 0;
  bool silent_;
};

}  // namespace aln::engine
