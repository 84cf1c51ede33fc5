#pragma once
// Rank-aware logging. A Logger is a value passed through the RunContext (no global logger): every
// line carries the time, level, rank and role, so interleaved output of many ranks stays readable.
#include <cstdio>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace aln {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning", "error" (case-insensitive); false on anything else.
bool parse_log_level(std::string_view text, LogLevel* level);

class Logger {
 public:
  Logger() = default;
  Logger(int rank, std::string role, LogLevel level = LogLevel::kInfo, std::FILE* sink = stderr)
      : rank_(rank), role_(std::move(role)), level_(level), sink_(sink) {}

  void log(LogLevel level, std::string_view message) const;

  template <typename... Args>
  void info(const absl::FormatSpec<Args...>& format, const Args&... args) const {
    if (enabled(LogLevel::kInfo)) log(LogLevel::kInfo, absl::StrFormat(format, args...));
  }
  template <typename... Args>
  void warning(const absl::FormatSpec<Args...>& format, const Args&... args) const {
    if (enabled(LogLevel::kWarning)) log(LogLevel::kWarning, absl::StrFormat(format, args...));
  }
  template <typename... Args>
  void error(const absl::FormatSpec<Args...>& format, const Args&... args) const {
    if (enabled(LogLevel::kError)) log(LogLevel::kError, absl::StrFormat(format, args...));
  }
  template <typename... Args>
  void debug(const absl::FormatSpec<Args...>& format, const Args&... args) const {
    if (enabled(LogLevel::kDebug)) log(LogLevel::kDebug, absl::StrFormat(format, args...));
  }

  bool enabled(LogLevel level) const { return static_cast<int>(level) >= static_cast<int>(level_); }
  int rank() const { return rank_; }
  const std::string& role() const { return role_; }
  Logger with_role(std::string role) const { return Logger(rank_, std::move(role), level_, sink_); }

 private:
  int rank_ = 0;
  std::string role_ = "main";
  LogLevel level_ = LogLevel::kInfo;
  std::FILE* sink_ = stderr;
};

}  // namespace aln
