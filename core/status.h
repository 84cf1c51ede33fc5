#pragma once
// absl::Status helpers for the edges (config, files, RPC, process start).
#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/error.h"

#define ALN_STATUS_CONCAT_INNER(a, b) a##b
#define ALN_STATUS_CONCAT(a, b) ALN_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` is not OK.
#define ALN_RETURN_IF_ERROR(expr)                   \
  do {                                              \
    ::absl::Status _aln_status = (expr);            \
    if (!_aln_status.ok()) return _aln_status;      \
  } while (0)

// ALN_ASSIGN_OR_RETURN(auto x, statusor_expr);
#define ALN_ASSIGN_OR_RETURN(lhs, expr) \
  ALN_ASSIGN_OR_RETURN_IMPL(ALN_STATUS_CONCAT(_aln_statusor_, __LINE__), lhs, expr)
#define ALN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(*tmp)

namespace aln {

// Turns the exception in flight into a Status; used at exactly two places (RPC handlers and the
// top of `aln` subcommands), so compute code can keep throwing.
absl::Status status_from_current_exception();

// Runs `fn` and converts any exception it throws into a Status.
template <typename Fn>
absl::Status capture_status(Fn&& fn) {
  try {
    return std::forward<Fn>(fn)();
  } catch (...) {
    return status_from_current_exception();
  }
}

// Throws aln::Error when `status` is not OK (for compute code that calls an edge function).
void throw_if_error(const absl::Status& status, const char* file, int line);
#define ALN_THROW_IF_ERROR(expr) ::aln::throw_if_error((expr), __FILE__, __LINE__)

}  // namespace aln
