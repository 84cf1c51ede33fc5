#include "core/error.h"

#include <cstring>

namespace aln {
namespace {
// Paths are printed relative to the repo so messages stay short and stable across machines.
// (The build maps __FILE__ to repo-relative paths already; this covers other builds.)
const char* short_path(const char* file) {
  if (file[0] != '/') return file;
  const char* best = nullptr;
  for (const char* root : {"/core/", "/kernels/", "/distributed/", "/trainers/", "/launcher/", "/tests/", "/bench/"}) {
    const char* p = std::strstr(file, root);
    if (p != nullptr && (best == nullptr || p < best)) best = p;
  }
  return best == nullptr ? file : best + 1;
}
}  // namespace

Error::Error(std::string message, const char* file, int line)
    : std::runtime_error(absl::StrCat(short_path(file), ":", line, ": ", message)),
      message_(std::move(message)),
      file_(short_path(file)),
      line_(line) {}

namespace detail {
void throw_error(const char* file, int line, const char* condition, std::string message) {
  if (condition != nullptr) {
    message = message.empty() ? absl::StrCat("check `", condition, "` failed")
                              : absl::StrCat(message, " (check `", condition, "` failed)");
  }
  throw Error(std::move(message), file, line);
}
}  // namespace detail
}  // namespace aln
