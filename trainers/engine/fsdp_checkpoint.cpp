#include "trainers/engine/fsdp_checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/model_config.h"
#include "core/status.h"

namespace aln::engine {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "aln-shards-v1";
constexpr const char* kIndexFile = "index.json";
// Bounds that no real run reaches; a damaged index beyond them is refused before anything is sized by it.
constexpr int64_t kMaxShardRanks = 1 << 20;
constexpr int64_t kMaxShardElements = int64_t{1} << 45;

std::string file_of(const ShardIndex& index, int64_t rank) {
  return (fs::path(index.dir) / shard_file_name(rank, index.ranks)).string();
}

absl::Status bad_index(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

}  // namespace

std::string shard_file_name(int64_t rank, int64_t ranks) {
  return absl::StrFormat("rank-%05d-of-%05d.safetensors", rank, ranks);
}

absl::Status write_shard_index(const std::string& dir, const ShardIndex& index) {
  json tensors = json::object();
  for (const auto& [name, t] : index.tensors) {
    json parts = json::array();
    for (const ShardPart& p : t.parts) parts.push_back({p.rank, p.offset, p.numel});
    tensors[name] = {{"shape", t.shape}, {"parts", parts}};
  }
  json files = json::array();
  for (int64_t k = 0; k < index.ranks; ++k) files.push_back(shard_file_name(k, index.ranks));
  json config = json::parse(index.config_json, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return absl::InternalError("the model's config is not JSON");
  const json out = {
      {"format", kFormat}, {"ranks", index.ranks}, {"config", config}, {"files", files}, {"tensors", tensors}};
  return io::write_text_atomically((fs::path(dir) / kIndexFile).string(), out.dump(1) + "\n");
}

absl::Status write_rank_shard(const std::string& dir, int64_t rank, int64_t ranks, const optim::TensorMap& parts) {
  return io::save_safetensors((fs::path(dir) / shard_file_name(rank, ranks)).string(),
                              io::NamedTensors(parts.begin(), parts.end()),
                              {{"aln_shard", absl::StrCat(rank, " of ", ranks)}});
}

absl::StatusOr<ShardIndex> load_shard_index(const std::string& dir) {
  const std::string path = (fs::path(dir) / kIndexFile).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  const json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  const bool ours = !j.is_discarded() && j.is_object() && j.contains("format") && j["format"].is_string() &&
                    j["format"].get<std::string>() == kFormat;
  if (!ours) return bad_index(path, absl::StrCat("not an ", kFormat, " index"));
  ShardIndex index;
  index.dir = dir;
  try {
    index.ranks = j.at("ranks").get<int64_t>();
    const auto files = j.at("files").get<std::vector<std::string>>();
    if (index.ranks < 1 || index.ranks > kMaxShardRanks || static_cast<int64_t>(files.size()) != index.ranks) {
      return bad_index(path, absl::StrCat("\"ranks\" (", index.ranks, ") must be from 1 to ", kMaxShardRanks,
                                          " and the number of \"files\" (", files.size(), ")"));
    }
    for (int64_t k = 0; k < index.ranks; ++k) {
      if (files[static_cast<size_t>(k)] != shard_file_name(k, index.ranks)) {
        return bad_index(path, absl::StrCat("files[", k, "] is \"", files[static_cast<size_t>(k)], "\", expected \"",
                                            shard_file_name(k, index.ranks), "\""));
      }
    }
    index.config_json = j.at("config").dump();
    for (const auto& [name, t] : j.at("tensors").items()) {
      ShardedTensor st;
      st.shape = t.at("shape").get<std::vector<int64_t>>();
      int64_t numel = 1;
      for (int64_t d : st.shape) {
        // (Checked so that a damaged shape is an error, not an overflow.)
        if (d < 0 || __builtin_mul_overflow(numel, d, &numel) || numel > kMaxShardElements) {
          return bad_index(path, absl::StrCat("tensors.", name, ".shape is negative or too large"));
        }
      }
      int64_t next = 0;
      for (const auto& p : t.at("parts")) {
        const auto v = p.get<std::vector<int64_t>>();
        if (v.size() != 3)
          return bad_index(path, absl::StrCat("tensors.", name, ".parts: each is [rank, offset, numel]"));
        const ShardPart part{v[0], v[1], v[2]};
        if (part.rank < 0 || part.rank >= index.ranks || part.offset != next || part.numel <= 0 ||
            part.numel > numel - next) {
          return bad_index(path, absl::StrCat("tensors.", name, ".parts: [", part.rank, ", ", part.offset, ", ",
                                              part.numel, "] does not follow the part before it (element ", next,
                                              ", ranks 0 to ", index.ranks - 1, ")"));
        }
        next += part.numel;
        st.parts.push_back(part);
      }
      if (next != numel) {
        return bad_index(path, absl::StrCat("tensors.", name, ".parts cover ", next, " of its ", numel, " elements"));
      }
      index.tensors.emplace(name, std::move(st));
    }
  } catch (const json::exception& e) {
    return bad_index(path, e.what());
  }
  return index;
}

namespace {

absl::StatusOr<optim::TensorMap> read_ranges(const ShardIndex& index, const std::vector<ShardRange>& ranges,
                                             const std::vector<std::string>& suffixes) {
  optim::TensorMap out;
  std::set<std::string> missing, found;
  const at::TensorOptions options = at::TensorOptions().dtype(at::kFloat);
  for (const ShardRange& r : ranges) {
    auto it = index.tensors.find(r.name);
    if (it == index.tensors.end()) {
      return absl::DataLossError(absl::StrCat(index.dir, "/", kIndexFile, ": no tensor ", r.name));
    }
    int64_t numel = 1;
    for (int64_t d : it->second.shape) numel *= d;
    if (r.offset < 0 || r.numel < 0 || r.offset + r.numel > numel) {
      return absl::DataLossError(absl::StrCat(index.dir, "/", kIndexFile, ": ", r.name, " has ", numel,
                                              " elements; elements [", r.offset, ", ", r.offset + r.numel,
                                              ") were asked for"));
    }
    for (const std::string& s : suffixes) out[r.name + s] = at::empty({r.numel}, options);
  }
  for (int64_t k = 0; k < index.ranks; ++k) {
    // What this file holds of the ranges: (range, part) pairs that overlap.
    std::vector<std::pair<const ShardRange*, const ShardPart*>> hits;
    std::set<std::string> wanted;
    for (const ShardRange& r : ranges) {
      for (const ShardPart& p : index.tensors.at(r.name).parts) {
        if (p.rank != k || p.offset >= r.offset + r.numel || p.offset + p.numel <= r.offset) continue;
        hits.emplace_back(&r, &p);
        for (const std::string& s : suffixes) wanted.insert(r.name + s);
      }
    }
    if (hits.empty()) continue;
    const std::string path = file_of(index, k);
    auto file = io::load_safetensors(path, [&wanted](const std::string& n) { return wanted.count(n) > 0; });
    if (!file.ok()) return file.status();
    for (const auto& [r, p] : hits) {
      const int64_t a = std::max(r->offset, p->offset), b = std::min(r->offset + r->numel, p->offset + p->numel);
      for (const std::string& s : suffixes) {
        const std::string key = r->name + s;
        auto t = file->tensors.find(key);
        if (t == file->tensors.end()) {
          if (s.empty()) return absl::DataLossError(absl::StrCat(path, ": no tensor ", key, " (index.json lists it)"));
          missing.insert(key);
          continue;
        }
        found.insert(key);
        if (t->second.numel() != p->numel) {
          return absl::DataLossError(
              absl::StrCat(path, ": ", key, " has ", t->second.numel(), " elements, index.json says ", p->numel));
        }
        out[key].narrow(0, a - r->offset, b - a).copy_(t->second.reshape(-1).narrow(0, a - p->offset, b - a));
      }
    }
  }
  for (const std::string& key : missing) {
    if (found.count(key) > 0) {
      return absl::DataLossError(absl::StrCat(index.dir, ": ", key, " is in some rank files and not in others"));
    }
    out.erase(key);
  }
  return out;
}

}  // namespace

absl::StatusOr<optim::TensorMap> read_shard_ranges(const ShardIndex& index, const std::vector<ShardRange>& ranges,
                                                   const std::vector<std::string>& suffixes) {
  try {
    return read_ranges(index, ranges, suffixes);
  } catch (const std::exception& e) {  // a tensor LibTorch cannot make or copy (damaged sizes)
    return absl::DataLossError(absl::StrCat(index.dir, ": ", e.what()));
  }
}

absl::StatusOr<optim::TensorMap> read_shard_whole(const ShardIndex& index, const std::vector<std::string>& suffixes) {
  std::vector<ShardRange> ranges;
  for (const auto& [name, t] : index.tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    ranges.push_back({name, 0, numel});
  }
  auto flat = read_shard_ranges(index, ranges, suffixes);
  if (!flat.ok()) return flat.status();
  optim::TensorMap out;
  for (const ShardRange& r : ranges) {
    for (const std::string& s : suffixes) {
      auto it = flat->find(r.name + s);
      if (it != flat->end()) out.emplace(it->first, it->second.view(index.tensors.at(r.name).shape));
    }
  }
  return out;  // (the shapes were checked against the element counts when the index was read)
}

absl::StatusOr<model::DecoderModel> read_shard_policy(const ShardIndex& index) {
  const std::string path = (fs::path(index.dir) / kIndexFile).string();
  auto config = model::parse_hf_config(index.config_json, path);
  if (!config.ok()) return config.status();
  auto tensors = read_shard_whole(index, {""});
  if (!tensors.ok()) return tensors.status();
  auto policy = model::DecoderModel::from_tensors(*config, std::move(*tensors));
  if (!policy.ok()) return absl::DataLossError(absl::StrCat(path, ": ", policy.status().message()));
  return policy;
}

absl::Status write_shard_policy(const ShardIndex& index, const std::string& out, at::ScalarType dtype) {
  const std::string path = (fs::path(index.dir) / kIndexFile).string();
  auto config = model::parse_hf_config(index.config_json, path);
  if (!config.ok()) return config.status();
  // The checks read_shard_policy's model makes: exactly the config's tensors, each of its shape.
  std::map<std::string, std::vector<int64_t>> expected;
  for (auto& [name, shape] : model::DecoderModel::expected_shapes(*config)) expected.emplace(name, std::move(shape));
  std::vector<io::TensorSpec> specs;
  for (const auto& [name, t] : index.tensors) {
    auto it = expected.find(name);
    if (it == expected.end() || it->second != t.shape) {
      return absl::DataLossError(absl::StrCat(
          path, ": tensor '", name, "' ",
          it == expected.end() ? "is not one of the config's model" : "has another shape than the config gives it"));
    }
    specs.push_back({name, dtype, t.shape});
  }
  if (specs.size() != expected.size()) {
    return absl::DataLossError(absl::StrCat(path, ": ", expected.size() - specs.size(), " of the config's ",
                                            expected.size(), " tensors are missing"));
  }
  return model::save_hf_model_streamed(*config, specs, out, [&](const io::TensorPut& put) -> absl::Status {
    for (const std::string& name : io::safetensors_file_order(specs)) {
      const ShardedTensor& t = index.tensors.at(name);
      int64_t numel = 1;
      for (int64_t d : t.shape) numel *= d;
      auto read = read_shard_ranges(index, {ShardRange{name, 0, numel}}, {""});
      if (!read.ok()) return read.status();
      ALN_RETURN_IF_ERROR(put(name, read->at(name).view(t.shape).to(dtype)));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<optim::TensorMap> read_optimizer_slices(const std::string& file, const std::vector<ShardRange>& ranges) {
  auto header = io::read_safetensors_header(file);
  if (!header.ok()) return header.status();
  std::set<std::string> held;
  for (const io::SafetensorsEntry& e : header->entries) held.insert(e.name);
  std::vector<io::SafetensorsSlice> slices;
  for (const ShardRange& r : ranges) {
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      const std::string key = r.name + suffix;
      if (held.count(key) > 0) slices.push_back({key, key, r.offset, r.numel});
    }
  }
  auto read = io::load_safetensors_slices(file, slices);
  if (!read.ok()) return read.status();
  optim::TensorMap out;
  for (auto& [key, t] : *read) out.emplace(key, t.to(at::kFloat));
  return out;
}

absl::StatusOr<at::Tensor> read_optimizer_step(const std::string& file) {
  auto loaded = io::load_safetensors(file, [](const std::string& n) { return n == "step"; });
  if (!loaded.ok()) return loaded.status();
  auto it = loaded->tensors.find("step");
  if (it == loaded->tensors.end()) return absl::DataLossError(absl::StrCat(file, ": no \"step\" tensor"));
  return it->second;
}

absl::StatusOr<at::Tensor> read_shard_step(const ShardIndex& index) {
  const std::string path = file_of(index, 0);
  auto file = io::load_safetensors(path, [](const std::string& n) { return n == "step"; });
  if (!file.ok()) return file.status();
  auto it = file->tensors.find("step");
  if (it == file->tensors.end()) return absl::DataLossError(absl::StrCat(path, ": no \"step\" tensor"));
  return it->second;
}

}  // namespace aln::engine
