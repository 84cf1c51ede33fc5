#pragma once
// The safetensors format, read and written by our own code: 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the tensor bytes.
// Malformed files (short, bad header length or JSON, unknown dtype, offsets out of range, holes or
// overlaps, size/shape mismatch, duplicate names) give an error naming the file and the problem.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace aln::model {

struct TensorEntry {
  std::string name;
  std::string dtype;           // "F32", "BF16", ...
  std::vector<int64_t> shape;
  int64_t begin = 0;           // byte offsets into the data section
  int64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorEntry> entries;  // in data order
  std::map<std::string, std::string> metadata;
  int64_t data_offset = 0;           // where the data section starts in the file
};

// Parses and validates a header given the file's total size (no tensor data is read). Separate so
// it can be fuzzed on its own.
absl::StatusOr<SafetensorsHeader> parse_safetensors_header(const std::string& header_json, int64_t header_length,
                                                           int64_t file_size, const std::string& file);

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

absl::StatusOr<SafetensorsFile> load_safetensors(const std::string& path);

// Writes atomically (temporary file, fsync, rename). Tensors are written contiguous in their dtype.
absl::Status save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace aln::model
