#pragma once
// Errors inside compute are exceptions (aln::Error, with file:line); at the edges they become
// absl::Status (see core/status.h). Library code never exits the process.
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"

namespace aln {

class Error : public std::runtime_error {
 public:
  Error(std::string message, const char* file, int line);
  const std::string& message() const { return message_; }
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  std::string message_;
  const char* file_;
  int line_;
};

namespace detail {
template <typename... Parts>
std::string cat(const Parts&... parts) {
  if constexpr (sizeof...(Parts) == 0) {
    return {};
  } else {
    return absl::StrCat(parts...);
  }
}
[[noreturn]] void throw_error(const char* file, int line, const char* condition, std::string message);
}  // namespace detail

}  // namespace aln

// ALN_CHECK(cond, parts...): throws aln::Error("file:line: check `cond` failed: parts...").
#define ALN_CHECK(cond, ...)                                                                \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      ::aln::detail::throw_error(__FILE__, __LINE__, #cond, ::aln::detail::cat(__VA_ARGS__)); \
    }                                                                                       \
  } while (0)

// ALN_FAIL(parts...): unconditional error with the same format.
#define ALN_FAIL(...) ::aln::detail::throw_error(__FILE__, __LINE__, nullptr, ::aln::detail::cat(__VA_ARGS__))
