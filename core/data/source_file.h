#pragma once
// Row-by-row reading of JSONL, JSONL.gz and CSV files with the 1-based line each row starts on.
// CSV rows become JSON objects keyed by the header (all values strings), so the format readers
// see one shape. Quoted CSV fields may span lines (RFC 4180).
#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace aln::data {

enum class FileKind { kJsonl, kJsonlGz, kCsv, kJson };

// From the name: .jsonl/.json.gz/.jsonl.gz/.csv/.json; anything else is an error naming the file.
absl::Status file_kind(const std::string& path, FileKind* kind);

// Calls `row(line, object)` for every row; stops at the first non-OK status `row` returns.
// Malformed rows (bad JSON, a JSON value that is not an object, a CSV row with the wrong number of
// fields) are reported through `bad_row(line, what)`, which decides whether to stop (non-OK) or skip.
absl::Status for_each_row(const std::string& path,
                          const std::function<absl::Status(int64_t line, const nlohmann::json& row)>& row,
                          const std::function<absl::Status(int64_t line, const std::string& what)>& bad_row);

}  // namespace aln::data
