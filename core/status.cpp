#include "core/status.h"

#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace aln {

namespace {
constexpr const char* kOutOfMemoryAdvice =
    "out of memory: lower optimizer.micro_batch_size or the data's maximum lengths, or shard the policy over more "
    "ranks (parallel.policy.shard: gradients, or full)";
}  // namespace

absl::Status status_from_current_exception() {
  try {
    throw;
  } catch (const Error& e) {
    return absl::InternalError(e.what());
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(kOutOfMemoryAdvice);
  } catch (const std::exception& e) {
    // LibTorch's allocators fail with their own error (and a stack trace): keep its first line.
    const std::string what = e.what();
    if (what.find("can't allocate memory") != std::string::npos || what.find("out of memory") != std::string::npos) {
      return absl::ResourceExhaustedError(absl::StrCat(what.substr(0, what.find('\n')), "; ", kOutOfMemoryAdvice));
    }
    return absl::InternalError(what);
  } catch (...) {
    return absl::UnknownError("unknown exception");
  }
}

void throw_if_error(const absl::Status& status, const char* file, int line) {
  if (!status.ok()) throw Error(std::string(status.message()), file, line);
}

}  // namespace aln
