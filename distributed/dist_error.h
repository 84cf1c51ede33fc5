#pragma once
// Errors of collectives and process groups: they carry rank, host, operation and sequence number so
// a failed job says which rank and which collective, not just "timeout".
#include <cstdint>
#include <string>

#include "core/error.h"

namespace aln::dist {

class DistError : public Error {
 public:
  DistError(std::string message, int rank, std::string host, std::string op, int64_t seq, const char* file, int line);
  int rank() const { return rank_; }
  const std::string& host() const { return host_; }
  const std::string& op() const { return op_; }
  int64_t seq() const { return seq_; }

 private:
  int rank_;
  std::string host_;
  std::string op_;
  int64_t seq_;
};

std::string host_name();

}  // namespace aln::dist
