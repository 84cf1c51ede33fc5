#include "core/model/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace aln::model {
namespace {

using nlohmann::json;

constexpr int64_t kMaxHeader = 100LL << 20;  // 100 MB: larger headers are corrupt or hostile

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  int64_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo* find_dtype(at::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (t == d.type) return &d;
  }
  return nullptr;
}

absl::Status bad(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": invalid safetensors file: ", what));
}

}  // namespace

absl::StatusOr<SafetensorsHeader> parse_safetensors_header(const std::string& header_json, int64_t header_length,
                                                           int64_t file_size, const std::string& file) {
  SafetensorsHeader h;
  h.data_offset = 8 + header_length;
  json j;
  try {
    j = json::parse(header_json);
  } catch (const json::exception& e) {
    return bad(file, absl::StrCat("header is not valid JSON (", e.what(), ")"));
  }
  if (!j.is_object()) return bad(file, "header is not a JSON object");
  const int64_t data_size = file_size - h.data_offset;
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return bad(file, "__metadata__ is not an object");
      for (const auto& [k, val] : v.items()) {
        if (!val.is_string()) return bad(file, absl::StrCat("__metadata__.", k, " is not a string"));
        h.metadata[k] = val.get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) return bad(file, absl::StrCat("entry '", name, "' is not an object"));
    if (!v.contains("dtype") || !v["dtype"].is_string()) return bad(file, absl::StrCat("'", name, "': missing dtype"));
    if (!v.contains("shape") || !v["shape"].is_array()) return bad(file, absl::StrCat("'", name, "': missing shape"));
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
      return bad(file, absl::StrCat("'", name, "': data_offsets must be [begin, end]"));
    }
    TensorEntry e;
    e.name = name;
    e.dtype = v["dtype"].get<std::string>();
    const DtypeInfo* d = find_dtype(e.dtype);
    if (d == nullptr) return bad(file, absl::StrCat("'", name, "': unknown dtype '", e.dtype, "'"));
    int64_t numel = 1;
    for (const auto& dim : v["shape"]) {
      if (!dim.is_number_unsigned()) return bad(file, absl::StrCat("'", name, "': shape entries must be non-negative integers"));
      const uint64_t n = dim.get<uint64_t>();
      if (n > (1ULL << 40) || (n > 0 && static_cast<uint64_t>(numel) > (1ULL << 50) / n)) {
        return bad(file, absl::StrCat("'", name, "': shape is too large"));
      }
      e.shape.push_back(static_cast<int64_t>(n));
      numel *= static_cast<int64_t>(n);
    }
    for (int k = 0; k < 2; ++k) {
      if (!v["data_offsets"][k].is_number_unsigned()) {
        return bad(file, absl::StrCat("'", name, "': data_offsets must be non-negative integers"));
      }
    }
    const uint64_t begin = v["data_offsets"][0].get<uint64_t>(), end = v["data_offsets"][1].get<uint64_t>();
    if (begin > end) return bad(file, absl::StrCat("'", name, "': data_offsets begin ", begin, " > end ", end));
    if (end > static_cast<uint64_t>(std::max<int64_t>(0, data_size))) {
      return bad(file, absl::StrCat("'", name, "': data ends at ", end, ", past the ", data_size,
                                    " bytes of data (truncated file?)"));
    }
    e.begin = static_cast<int64_t>(begin);
    e.end = static_cast<int64_t>(end);
    if (e.end - e.begin != numel * d->size) {
      return bad(file, absl::StrCat("'", name, "': ", e.end - e.begin, " bytes do not hold shape x ", e.dtype, " (",
                                    numel * d->size, " bytes)"));
    }
    h.entries.push_back(std::move(e));
  }
  // The data section must be covered exactly: no holes, no overlaps.
  std::sort(h.entries.begin(), h.entries.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  int64_t cursor = 0;
  for (const auto& e : h.entries) {
    if (e.begin < cursor) return bad(file, absl::StrCat("'", e.name, "' overlaps the previous tensor"));
    if (e.begin > cursor) return bad(file, absl::StrCat("hole of ", e.begin - cursor, " bytes before '", e.name, "'"));
    cursor = e.end;
  }
  if (cursor != data_size) {
    return bad(file, absl::StrCat(data_size - cursor, " trailing bytes after the last tensor"));
  }
  return h;
}

absl::StatusOr<SafetensorsFile> load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  const int64_t size = static_cast<int64_t>(in.tellg());
  if (size < 8) return bad(path, absl::StrCat("only ", size, " bytes; a header length needs 8"));
  in.seekg(0);
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_length = 0;
  for (int k = 7; k >= 0; --k) header_length = (header_length << 8) | len_bytes[k];
  if (header_length > static_cast<uint64_t>(kMaxHeader)) return bad(path, absl::StrCat("header length ", header_length, " is absurd"));
  if (static_cast<int64_t>(header_length) > size - 8) {
    return bad(path, absl::StrCat("header length ", header_length, " runs past the end of the ", size, "-byte file"));
  }
  std::string header(header_length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_length));
  auto parsed = parse_safetensors_header(header, static_cast<int64_t>(header_length), size, path);
  if (!parsed.ok()) return parsed.status();
  SafetensorsFile out;
  out.metadata = parsed->metadata;
  for (const auto& e : parsed->entries) {
    if (out.tensors.count(e.name) != 0) return bad(path, absl::StrCat("duplicate tensor '", e.name, "'"));
    // Owning copies: files are small next to training state, and mmap would tie tensors to the file.
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(find_dtype(e.dtype)->type));
    in.seekg(parsed->data_offset + e.begin);
    in.read(static_cast<char*>(t.data_ptr()), e.end - e.begin);
    if (in.gcount() != e.end - e.begin) return bad(path, absl::StrCat("short read of '", e.name, "'"));
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

absl::Status save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Larger alignment first, then by name (the reference writer's order), so data stays aligned.
  std::vector<std::pair<std::string, at::Tensor>> ordered;
  for (const auto& [name, t] : tensors) {
    const DtypeInfo* d = find_dtype(t.scalar_type());
    if (d == nullptr) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': dtype not supported by safetensors"));
    ordered.emplace_back(name, t.detach().to(at::kCPU).contiguous());
  }
  std::stable_sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
    const int64_t sa = find_dtype(a.second.scalar_type())->size, sb = find_dtype(b.second.scalar_type())->size;
    return sa != sb ? sa > sb : a.first < b.first;
  });
  int64_t offset = 0;
  for (const auto& [name, t] : ordered) {
    const int64_t bytes = static_cast<int64_t>(t.nbytes());
    header[name] = {{"dtype", find_dtype(t.scalar_type())->name}, {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section starts 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot write"));
    unsigned char len_bytes[8];
    uint64_t n = text.size();
    for (int k = 0; k < 8; ++k) len_bytes[k] = static_cast<unsigned char>((n >> (8 * k)) & 0xFF);
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, t] : ordered) out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    if (!out.good()) return absl::DataLossError(absl::StrCat(tmp, ": write failed (disk full?)"));
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace aln::model
