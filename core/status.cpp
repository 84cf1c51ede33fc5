#include "core/status.h"

#include <new>
#include <string>

namespace aln {

absl::Status status_from_current_exception() {
  try {
    throw;
  } catch (const Error& e) {
    return absl::InternalError(e.what());
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory; lower the batch size or sequence length");
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  } catch (...) {
    return absl::UnknownError("unknown exception");
  }
}

void throw_if_error(const absl::Status& status, const char* file, int line) {
  if (!status.ok()) throw Error(std::string(status.message()), file, line);
}

}  // namespace aln
