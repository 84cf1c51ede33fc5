#pragma once
// Our own reader/writer of the safetensors format (https://huggingface.co/docs/safetensors):
//   8 bytes little-endian header length N | N bytes JSON header | data buffer
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
// to the data buffer) plus an optional "__metadata__" object of string -> string. Files we write
// load in Python's `safetensors` and are byte-identical to its output for the same tensors (with at
// most one metadata entry: Python orders metadata by a randomly seeded hash, we order it by key).
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aln::io {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
using SafetensorsMetadata = std::map<std::string, std::string>;

// Headers above this size are refused before allocating (the limit Python's safetensors uses too).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
std::optional<at::ScalarType> safetensors_dtype_from_name(std::string_view name);
std::optional<std::string_view> safetensors_dtype_name(at::ScalarType type);

// One header entry; `begin`/`end` are byte offsets into the data buffer.
struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype = at::ScalarType::Float;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// A validated header: entries sorted by offset, covering the data buffer exactly.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;
  SafetensorsMetadata metadata;
  uint64_t data_start = 0;  // file offset of the data buffer (8 + N)
};

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;  // CPU, contiguous, owning
  SafetensorsMetadata metadata;
};

// Validates the JSON header of a file whose data buffer has `data_size` bytes; errors start with
// `file` (only used in messages). Exposed so tests and tools can check headers without a file.
absl::StatusOr<SafetensorsHeader> parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                                           std::string_view file);

// Reads and validates only the header (no tensor data is read).
absl::StatusOr<SafetensorsHeader> read_safetensors_header(const std::string& path);

// Reads the whole file. Every malformed input (truncation, bad JSON, unknown dtype, offsets that
// overlap, leave holes or run past the end, sizes that disagree with shapes, duplicate names, BOOL
// bytes other than 0/1) is an InvalidArgument error naming the file and the problem.
// `wanted` (optional) picks the tensors to read (the header is checked whole either way): a
// pipeline stage reads only its own layers.
using TensorFilter = std::function<bool(const std::string&)>;
absl::StatusOr<SafetensorsFile> load_safetensors(const std::string& path, const TensorFilter& wanted = {});

// Elements [offset, offset + numel) of named tensors, flattened (1-D, the tensor's dtype), read
// with pread: a rank that needs a slice of a large tensor never reads the rest. The result is keyed
// by each slice's `key`. A missing tensor or a range outside it is an error naming file and tensor.
struct SafetensorsSlice {
  std::string key;
  std::string name;
  int64_t offset = 0;
  int64_t numel = 0;
};
absl::StatusOr<std::map<std::string, at::Tensor>> load_safetensors_slices(const std::string& path,
                                                                          const std::vector<SafetensorsSlice>& slices);

// Writes `tensors` (any device/layout; copied to contiguous CPU) atomically to `path`. Names must be
// unique, valid UTF-8 and not "__metadata__". Entries are laid out like Python's safetensors: by
// dtype (I64, F64, F32, I32, BF16, F16, I16, I8, U8, BOOL: its Dtype enum order, descending) then by
// name, header padded with spaces to a multiple of 8 bytes (so the data buffer starts 8-aligned).
absl::Status save_safetensors(const std::string& path, const NamedTensors& tensors,
                              const SafetensorsMetadata& metadata = {});

// A file written one tensor at a time (a model larger than memory, put together unit by unit):
// `specs` say every tensor's name, dtype and shape up front (the header is written first); then
// `produce` hands each tensor to `put` in the file's order (safetensors_file_order(specs)). A
// tensor out of order, of another dtype or shape, or missing at the end is an error naming it;
// after the first error `put` writes nothing more and returns it. The bytes are those
// save_safetensors writes for the same tensors (it is this function with every tensor at hand).
struct TensorSpec {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
};
using TensorPut = std::function<absl::Status(const std::string& name, const at::Tensor& tensor)>;
absl::Status save_safetensors_streamed(const std::string& path, const std::vector<TensorSpec>& specs,
                                       const std::function<absl::Status(const TensorPut& put)>& produce,
                                       const SafetensorsMetadata& metadata = {});
// The names of `specs` in the order a file lays them out (dtype, then name); empty if they are
// not a valid file (the save says why).
std::vector<std::string> safetensors_file_order(const std::vector<TensorSpec>& specs);

}  // namespace aln::io
