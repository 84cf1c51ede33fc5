#include "core/logging.h"

#include <chrono>
#include <ctime>

#include "absl/strings/ascii.h"
#include "core/text_escape.h"

namespace aln {

bool parse_log_level(std::string_view text, LogLevel* level) {
  const std::string lower = absl::AsciiStrToLower(std::string(text));
  if (lower == "debug") *level = LogLevel::kDebug;
  else if (lower == "info") *level = LogLevel::kInfo;
  else if (lower == "warning" || lower == "warn") *level = LogLevel::kWarning;
  else if (lower == "error") *level = LogLevel::kError;
  else return false;
  return true;
}

void Logger::log(LogLevel level, std::string_view raw) const {
  // One call, one line: a user string inside the message cannot start a line of its own.
  const std::string message = escape_for_log(raw);
  static constexpr const char* kNames[] = {"D", "I", "W", "E"};
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  // One fprintf per line so lines from threads and ranks do not interleave mid-line.
  std::fprintf(sink_, "%s %02d:%02d:%02d.%03d r%d/%s] %.*s\n", kNames[static_cast<int>(level)], tm.tm_hour,
               tm.tm_min, tm.tm_sec, ms, rank_, role_.c_str(), static_cast<int>(message.size()), message.data());
  std::fflush(sink_);
}

}  // namespace aln
