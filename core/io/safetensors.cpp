#include "core/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include <ATen/ops/empty.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/io/atomic_file.h"
#include "core/json_guard.h"
#include "core/status.h"

namespace aln::io {

// The format is little-endian; we copy bytes straight into tensors.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  // Position in Python safetensors' Dtype enum; its writer sorts by it, descending.
  int order;
};

constexpr std::array<DtypeInfo, 10> kDtypes = {{
    {"BOOL", at::ScalarType::Bool, 0},
    {"U8", at::ScalarType::Byte, 4},
    {"I8", at::ScalarType::Char, 5},
    {"I16", at::ScalarType::Short, 9},
    {"F16", at::ScalarType::Half, 11},
    {"BF16", at::ScalarType::BFloat16, 12},
    {"I32", at::ScalarType::Int, 13},
    {"F32", at::ScalarType::Float, 15},
    {"F64", at::ScalarType::Double, 17},
    {"I64", at::ScalarType::Long, 18},
}};

const DtypeInfo* find_dtype(at::ScalarType type) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.type == type) return &d;
  }
  return nullptr;
}

std::string supported_dtype_list() {
  std::string out;
  for (const DtypeInfo& d : kDtypes) absl::StrAppend(&out, out.empty() ? "" : ", ", d.name);
  return out;
}

// (Debian's abseil has its own string_view, so std::string_view is appended by hand.)
absl::Status bad(std::string_view file, const std::string& what) {
  return absl::InvalidArgumentError(std::string(file).append(": invalid safetensors file: ").append(what));
}

// Closes the descriptor on every path out of the reader.
class ReadFd {
 public:
  explicit ReadFd(int fd) : fd_(fd) {}
  ~ReadFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ReadFd(const ReadFd&) = delete;
  ReadFd& operator=(const ReadFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// pread until `size` bytes are in; a short read means the file shrank while we read it.
absl::Status read_exact(int fd, uint64_t offset, void* out, uint64_t size, const std::string& path) {
  char* p = static_cast<char*>(out);
  while (size > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, uint64_t{1} << 30));
    ssize_t n = ::pread(fd, p, chunk, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat(path, ": read failed: ", std::strerror(errno)));
    }
    if (n == 0) return absl::DataLossError(absl::StrCat(path, ": file ended early (truncated while reading?)"));
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsHeader> read_header_from(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) return bad(path, "not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    return bad(path, absl::StrCat("file is ", file_size, " bytes, shorter than the 8-byte header length"));
  }
  std::array<unsigned char, 8> len_bytes{};
  absl::Status s = read_exact(fd, 0, len_bytes.data(), 8, path);
  if (!s.ok()) return s;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[static_cast<size_t>(i)];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return bad(path, absl::StrCat("header length ", header_len, " exceeds the limit of ", kMaxSafetensorsHeaderBytes,
                                  " bytes"));
  }
  if (header_len > file_size - 8) {
    return bad(path, absl::StrCat("header length ", header_len, " runs past the end of the file (", file_size - 8,
                                  " bytes after the length field)"));
  }
  std::string header_json(static_cast<size_t>(header_len), '\0');
  s = read_exact(fd, 8, header_json.data(), header_len, path);
  if (!s.ok()) return s;
  auto header = parse_safetensors_header(header_json, file_size - 8 - header_len, path);
  if (header.ok()) header->data_start = 8 + header_len;
  return header;
}

// Non-negative integer that fits int64 (nlohmann keeps non-negative integer literals as unsigned;
// negatives, 2.0 and huge values come out as other types).
bool as_index(const nlohmann::json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) return false;
  *out = j.get<uint64_t>();
  return *out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

absl::StatusOr<SafetensorsEntry> parse_entry(const std::string& name, const nlohmann::json& j, std::string_view file) {
  const std::string where = absl::StrCat("tensor '", capped_excerpt(name, kJsonExcerptChars), "'");
  if (!j.is_object()) return bad(file, absl::StrCat(where, ": entry must be a JSON object, got ", j.type_name()));
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!j.contains(key)) return bad(file, absl::StrCat(where, ": missing \"", key, "\""));
  }
  SafetensorsEntry e;
  e.name = name;
  const nlohmann::json& dtype = j["dtype"];
  if (!dtype.is_string())
    return bad(file, absl::StrCat(where, ": \"dtype\" must be a string, got ", json_excerpt(dtype)));
  auto type = safetensors_dtype_from_name(dtype.get_ref<const std::string&>());
  if (!type) {
    return bad(file, absl::StrCat(where, ": unsupported dtype ", json_excerpt(dtype),
                                  " (supported: ", supported_dtype_list(), ")"));
  }
  e.dtype = *type;

  const nlohmann::json& shape = j["shape"];
  if (!shape.is_array())
    return bad(file, absl::StrCat(where, ": \"shape\" must be an array, got ", json_excerpt(shape)));
  // numel * element size with overflow checks: a hostile shape must not wrap around to a small size.
  uint64_t nbytes = at::elementSize(e.dtype);
  for (size_t i = 0; i < shape.size(); ++i) {
    uint64_t dim = 0;
    if (!as_index(shape[i], &dim)) {
      return bad(file,
                 absl::StrCat(where, ": shape[", i, "] is ", json_excerpt(shape[i]), ", not a non-negative integer"));
    }
    e.shape.push_back(static_cast<int64_t>(dim));
    if (dim != 0 && nbytes > std::numeric_limits<uint64_t>::max() / dim) {
      return bad(file, absl::StrCat(where, ": shape ", json_excerpt(shape), " is too large"));
    }
    nbytes *= dim;
  }

  const nlohmann::json& offsets = j["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !as_index(offsets[0], &e.begin) || !as_index(offsets[1], &e.end)) {
    return bad(file, absl::StrCat(where, ": \"data_offsets\" must be [begin, end] of non-negative integers, got ",
                                  json_excerpt(offsets)));
  }
  if (e.begin > e.end) {
    return bad(file, absl::StrCat(where, ": data_offsets begin ", e.begin, " is after end ", e.end));
  }
  if (e.end - e.begin != nbytes) {
    return bad(file, absl::StrCat(where, ": data_offsets span ", e.end - e.begin, " bytes but shape ",
                                  json_excerpt(shape), " of ", dtype.get_ref<const std::string&>(), " needs ", nbytes));
  }
  return e;
}

absl::Status parse_metadata(const nlohmann::json& j, std::string_view file, SafetensorsMetadata* out) {
  if (j.is_null()) return absl::OkStatus();
  if (!j.is_object()) return bad(file, absl::StrCat("\"__metadata__\" must be an object, got ", j.type_name()));
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return bad(file, absl::StrCat("\"__metadata__\" value of '", capped_excerpt(key, kJsonExcerptChars),
                                    "' must be a string, got ", json_excerpt(value)));
    }
    (*out)[key] = value.get<std::string>();
  }
  return absl::OkStatus();
}

// Python's safetensors writes the header as one compact JSON object; we emit the same bytes.
// nlohmann's escaping of strings matches serde_json's (short escapes, \u00xx for other control
// characters, UTF-8 kept as is).
std::string json_string(const std::string& s) { return nlohmann::json(s).dump(); }

}  // namespace

std::optional<at::ScalarType> safetensors_dtype_from_name(std::string_view name) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.name == name) return d.type;
  }
  return std::nullopt;
}

std::optional<std::string_view> safetensors_dtype_name(at::ScalarType type) {
  const DtypeInfo* d = find_dtype(type);
  if (d == nullptr) return std::nullopt;
  return d->name;
}

absl::StatusOr<SafetensorsHeader> parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                                           std::string_view file) {
  // nlohmann keeps the last of duplicate keys silently; a parser callback sees every key, so we can
  // refuse duplicate tensor names (and duplicate keys inside entries) instead.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool duplicate_is_tensor = false;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) {
      open_objects.emplace_back();
    } else if (event == Event::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == Event::key && !open_objects.empty() && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) {
        duplicate = key;
        duplicate_is_tensor = open_objects.size() == 1;
      }
    }
    return true;
  };
  if (absl::Status depth = check_json_depth(header_json); !depth.ok()) {
    return bad(file, absl::StrCat("header: ", depth.message()));
  }
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(header_json.begin(), header_json.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    return bad(file, absl::StrCat("header is not valid JSON: ", capped_excerpt(e.what())));
  }
  if (!duplicate.empty()) {
    return bad(file, duplicate_is_tensor ? absl::StrCat("tensor name '", capped_excerpt(duplicate, kJsonExcerptChars),
                                                        "' appears more than once")
                                         : absl::StrCat("duplicate key '", capped_excerpt(duplicate, kJsonExcerptChars),
                                                        "' in the header"));
  }
  if (!root.is_object()) return bad(file, absl::StrCat("header must be a JSON object, got ", root.type_name()));

  SafetensorsHeader header;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      absl::Status s = parse_metadata(value, file, &header.metadata);
      if (!s.ok()) return s;
      continue;
    }
    auto entry = parse_entry(name, value, file);
    if (!entry.ok()) return entry.status();
    if (entry->end > data_size) {
      return bad(file, absl::StrCat("tensor '", capped_excerpt(name, kJsonExcerptChars), "': data_offsets end ",
                                    entry->end, " is past the end of the data buffer (", data_size, " bytes)"));
    }
    header.entries.push_back(*std::move(entry));
  }

  // The format requires the entries to tile the data buffer exactly: no overlaps, no holes.
  std::sort(header.entries.begin(), header.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : header.entries) {
    if (e.begin < covered) {
      return bad(file, absl::StrCat("tensor '", capped_excerpt(e.name, kJsonExcerptChars), "' [", e.begin, ", ", e.end,
                                    ") overlaps tensor '", capped_excerpt(previous->name, kJsonExcerptChars), "' [",
                                    previous->begin, ", ", previous->end, ")"));
    }
    if (e.begin > covered) {
      return bad(file, absl::StrCat("data buffer bytes [", covered, ", ", e.begin,
                                    ") belong to no tensor (hole before tensor '",
                                    capped_excerpt(e.name, kJsonExcerptChars), "')"));
    }
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size) {
    return bad(file, absl::StrCat("data buffer bytes [", covered, ", ", data_size,
                                  ") at the end belong to no tensor (the file has trailing bytes)"));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> read_safetensors_header(const std::string& path) {
  ReadFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  return read_header_from(fd.get(), path);
}

// Tensors are owning CPU copies read with pread, not mmap-backed views: a mapping would crash the
// process with SIGBUS if the file were truncated or rewritten in place while tensors live (e.g. a
// checkpoint overwritten during training), tensor offsets in foreign files need not be aligned to
// the element size, and the trainers move weights to the GPU or convert dtypes right after loading,
// so the copy costs no extra peak memory (we read straight into the tensor, no staging buffer).
absl::StatusOr<SafetensorsFile> load_safetensors(const std::string& path, const TensorFilter& wanted) {
  ReadFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  auto header = read_header_from(fd.get(), path);
  if (!header.ok()) return header.status();

  SafetensorsFile out;
  out.metadata = std::move(header->metadata);
  for (const SafetensorsEntry& e : header->entries) {
    if (wanted && !wanted(e.name)) continue;
    at::Tensor t;
    try {
      t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    } catch (const std::exception& ex) {  // e.g. allocation failure for a huge (but consistent) tensor
      return absl::ResourceExhaustedError(absl::StrCat(path, ": cannot allocate tensor '", e.name, "': ", ex.what()));
    }
    const uint64_t nbytes = e.end - e.begin;
    if (nbytes > 0) {
      absl::Status s = read_exact(fd.get(), header->data_start + e.begin, t.data_ptr(), nbytes, path);
      if (!s.ok()) return s;
    }
    if (e.dtype == at::ScalarType::Bool) {
      // Any byte other than 0/1 is undefined behaviour for C++ bool, which ATen kernels use.
      const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
      for (uint64_t i = 0; i < nbytes; ++i) {
        if (bytes[i] > 1) {
          return bad(path, absl::StrCat("BOOL tensor '", e.name, "' holds byte ", int{bytes[i]}, " at element ", i,
                                        " (must be 0 or 1)"));
        }
      }
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

absl::StatusOr<std::map<std::string, at::Tensor>> load_safetensors_slices(const std::string& path,
                                                                          const std::vector<SafetensorsSlice>& slices) {
  ReadFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  auto header = read_header_from(fd.get(), path);
  if (!header.ok()) return header.status();
  std::map<std::string_view, const SafetensorsEntry*> by_name;
  for (const SafetensorsEntry& e : header->entries) by_name.emplace(e.name, &e);
  std::map<std::string, at::Tensor> out;
  for (const SafetensorsSlice& slice : slices) {
    auto it = by_name.find(slice.name);
    if (it == by_name.end()) return absl::NotFoundError(absl::StrCat(path, ": no tensor '", slice.name, "'"));
    const SafetensorsEntry& e = *it->second;
    if (e.dtype == at::ScalarType::Bool) return bad(path, absl::StrCat("BOOL tensor '", e.name, "' cannot be sliced"));
    const uint64_t element = c10::elementSize(e.dtype);
    const uint64_t elements = (e.end - e.begin) / element;
    if (slice.offset < 0 || slice.numel < 0 || static_cast<uint64_t>(slice.offset) > elements ||
        static_cast<uint64_t>(slice.numel) > elements - static_cast<uint64_t>(slice.offset)) {
      return bad(path, absl::StrCat("elements [", slice.offset, ", ", slice.offset + slice.numel, ") of tensor '",
                                    e.name, "' asked for; it has ", elements));
    }
    at::Tensor t = at::empty({slice.numel}, at::TensorOptions().dtype(e.dtype));
    if (slice.numel > 0) {
      ALN_RETURN_IF_ERROR(read_exact(fd.get(), header->data_start + e.begin + slice.offset * element, t.data_ptr(),
                                     static_cast<uint64_t>(slice.numel) * element, path));
    }
    out.insert_or_assign(slice.key, std::move(t));
  }
  return out;
}

namespace {

// Where each tensor goes: Python's order (dtype by its enum, descending, then name).
struct Planned {
  const TensorSpec* spec;
  const DtypeInfo* dtype;
  uint64_t nbytes;
};

absl::StatusOr<std::vector<Planned>> plan_file(const std::string& path, const std::vector<TensorSpec>& specs) {
  std::vector<Planned> plan;
  plan.reserve(specs.size());
  std::set<std::string_view> seen;
  for (const TensorSpec& spec : specs) {
    if (spec.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": '__metadata__' is reserved"));
    }
    if (!seen.insert(spec.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor name '", spec.name, "' given more than once"));
    }
    const DtypeInfo* dtype = find_dtype(spec.dtype);
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", spec.name, "' has dtype ", c10::toString(spec.dtype),
                       ", which safetensors I/O does not support (supported: ", supported_dtype_list(), ")"));
    }
    uint64_t numel = 1;
    for (int64_t d : spec.shape) numel *= static_cast<uint64_t>(d);
    plan.push_back({&spec, dtype, numel * c10::elementSize(spec.dtype)});
  }
  std::stable_sort(plan.begin(), plan.end(), [](const Planned& a, const Planned& b) {
    return a.dtype->order != b.dtype->order ? a.dtype->order > b.dtype->order : a.spec->name < b.spec->name;
  });
  return plan;
}

absl::StatusOr<std::string> file_header(const std::string& path, const std::vector<Planned>& plan,
                                        const SafetensorsMetadata& metadata) {
  std::string header = "{";
  try {
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [key, value] : metadata) {
        absl::StrAppend(&header, first ? "" : ",", json_string(key), ":", json_string(value));
        first = false;
      }
      header += "}";
    }
    uint64_t offset = 0;
    for (const Planned& item : plan) {
      absl::StrAppend(&header, header.size() > 1 ? "," : "", json_string(item.spec->name), ":{\"dtype\":\"",
                      item.dtype->name, "\",\"shape\":[");
      for (size_t d = 0; d < item.spec->shape.size(); ++d)
        absl::StrAppend(&header, d > 0 ? "," : "", item.spec->shape[d]);
      absl::StrAppend(&header, "],\"data_offsets\":[", offset, ",", offset + item.nbytes, "]}");
      offset += item.nbytes;
    }
  } catch (const nlohmann::json::exception& ex) {  // names or metadata that are not valid UTF-8
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot encode the header: ", ex.what()));
  }
  header += "}";
  // Padding keeps the data buffer 8-byte aligned in the file, as Python's writer does.
  header.append((8 - header.size() % 8) % 8, ' ');
  return header;
}

}  // namespace

std::vector<std::string> safetensors_file_order(const std::vector<TensorSpec>& specs) {
  auto plan = plan_file("", specs);
  std::vector<std::string> names;
  if (!plan.ok()) return names;
  for (const Planned& p : *plan) names.push_back(p.spec->name);
  return names;
}

absl::Status save_safetensors_streamed(const std::string& path, const std::vector<TensorSpec>& specs,
                                       const std::function<absl::Status(const TensorPut& put)>& produce,
                                       const SafetensorsMetadata& metadata) {
  auto plan = plan_file(path, specs);
  if (!plan.ok()) return plan.status();
  auto header = file_header(path, *plan, metadata);
  if (!header.ok()) return header.status();
  return write_file_atomically(path, [&](FileWriter& out) {
    std::array<unsigned char, 8> len{};
    for (size_t i = 0; i < 8; ++i)
      len[i] = static_cast<unsigned char>(static_cast<uint64_t>(header->size()) >> (8 * i));
    absl::Status failed = out.write(len.data(), len.size());
    if (failed.ok()) failed = out.write(header->data(), header->size());
    size_t next = 0;
    const TensorPut put = [&](const std::string& name, const at::Tensor& tensor) -> absl::Status {
      if (!failed.ok()) return failed;  // the first error stands; later tensors are not written
      if (next >= plan->size()) {
        failed = absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' comes after the last one"));
        return failed;
      }
      const Planned& item = (*plan)[next];
      if (name != item.spec->name || !tensor.defined() || tensor.scalar_type() != item.spec->dtype ||
          tensor.sizes() != at::IntArrayRef(item.spec->shape)) {
        failed = absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor '", name, "' came where '", item.spec->name, "' (", c10::toString(item.spec->dtype), " ",
            c10::str(at::IntArrayRef(item.spec->shape)), ") belongs",
            tensor.defined() ? absl::StrCat(", as ", c10::toString(tensor.scalar_type()), " ", c10::str(tensor.sizes()))
                             : std::string(", undefined")));
        return failed;
      }
      ++next;
      if (item.nbytes == 0) return absl::OkStatus();
      at::Tensor data;
      try {
        data = tensor.detach().to(at::kCPU).contiguous();
      } catch (const std::exception& ex) {
        failed = absl::InternalError(absl::StrCat(path, ": cannot copy tensor '", name, "' to the CPU: ", ex.what()));
        return failed;
      }
      failed = out.write(data.data_ptr(), item.nbytes);
      return failed;
    };
    absl::Status produced = produce(put);
    if (!failed.ok()) return failed;
    if (!produced.ok()) return produced;
    if (next != plan->size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", plan->size() - next, " of ", plan->size(),
                                                     " tensors never came (the first: '", (*plan)[next].spec->name,
                                                     "')"));
    }
    return absl::OkStatus();
  });
}

absl::Status save_safetensors(const std::string& path, const NamedTensors& tensors,
                              const SafetensorsMetadata& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  std::map<std::string_view, const at::Tensor*> by_name;
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' is undefined"));
    specs.push_back({name, tensor.scalar_type(), tensor.sizes().vec()});
    by_name.emplace(name, &tensor);
  }
  const std::vector<std::string> order = safetensors_file_order(specs);
  return save_safetensors_streamed(
      path, specs,
      [&](const TensorPut& put) {
        for (const std::string& name : order) ALN_RETURN_IF_ERROR(put(name, *by_name.at(name)));
        return absl::OkStatus();
      },
      metadata);
}

}  // namespace aln::io
