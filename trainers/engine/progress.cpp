#include "trainers/engine/progress.h"

#include <unistd.h>

#include <cstdio>

namespace aln::engine {

Progress::Progress(std::string label, int64_t total, ProgressStyle style)
    : label_(std::move(label)),
      total_(total),
      tty_(style == ProgressStyle::kBar && isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_),
      silent_(style == ProgressStyle::kNone) {}

void Progress::update(int64_t done, double loss, double tokens_per_second) {
  done_ = done;
  if (silent_) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double since_print = std::chrono::duration<double>(now - last_print_).count();
  // Lines mode prints every 10 s and at the end, so logs stay short.
  if (!tty_ && since_print < 10.0 && done != total_) return;
  if (tty_ && since_print < 0.2 && done != total_) return;
  last_print_ = now;
  const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_ - done) : 0.0;
  const int width = 24;
  const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%s[%s] %s %lld/%lld loss %.4f %.0f tok/s elapsed %02d:%02d eta %02d:%02d%s", tty_ ? "\r" : "",
               label_.c_str(), bar.c_str(), static_cast<long long>(done), static_cast<long long>(total_), loss,
               tokens_per_second, static_cast<int>(elapsed) / 60, static_cast<int>(elapsed) % 60,
               static_cast<int>(eta) / 60, static_cast<int>(eta) % 60, tty_ ? "" : "\n");
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_ && !silent_) std::fprintf(stderr, "\n");
}

}  // namespace aln::engine
