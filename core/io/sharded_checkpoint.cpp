#include "core/io/sharded_checkpoint.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/atomic_file.h"
#include "core/json_guard.h"

namespace aln::io {
namespace {

namespace fs = std::filesystem;

absl::Status bad_index(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": invalid safetensors index: ", what));
}

// Shards live next to the index; a name with a path separator could point anywhere else.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// model-00001-of-00002.safetensors (five digits or more each, as transformers names them).
bool is_shard_file_name(const std::string& name) {
  static constexpr std::string_view kPrefix = "model-", kSuffix = ".safetensors";
  if (name.size() <= kPrefix.size() + kSuffix.size() || !name.starts_with(kPrefix) || !name.ends_with(kSuffix)) {
    return false;
  }
  std::string_view middle(name);
  middle = middle.substr(kPrefix.size(), middle.size() - kPrefix.size() - kSuffix.size());
  size_t of = middle.find("-of-");
  if (of == std::string_view::npos) return false;
  auto digits = [](std::string_view s) {
    return s.size() >= 5 &&
           std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  };
  return digits(middle.substr(0, of)) && digits(middle.substr(of + 4));
}

std::string shard_name(size_t index, size_t count) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

absl::Status remove_stale_files(const fs::path& dir, const std::set<std::string>& keep) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kSafetensorsSingleFile || name == kSafetensorsIndexFile || is_shard_file_name(name);
    if (ours && !keep.contains(name)) stale.push_back(entry.path());
  }
  if (ec) return absl::UnavailableError(absl::StrCat(dir.string(), ": cannot list: ", ec.message()));
  for (const fs::path& p : stale) {
    if (!fs::remove(p, ec) && ec) {
      return absl::UnavailableError(absl::StrCat(p.string(), ": cannot remove stale checkpoint file: ", ec.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& tensor_bytes, uint64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  for (size_t i = 0; i < tensor_bytes.size(); ++i) {
    const uint64_t size = tensor_bytes[i];
    if (size > max_shard_bytes) {
      shards.push_back({i});
      continue;
    }
    // huggingface_hub closes the current shard here even when it is empty (it cannot be: only a
    // tensor above the limit could overflow an empty shard, and those took the branch above).
    if (current_bytes + size > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += size;
  }
  if (!current.empty()) shards.push_back(std::move(current));
  return shards;
}

absl::StatusOr<SafetensorsFile> load_sharded_safetensors(const std::string& index_path, const TensorFilter& wanted) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(index_path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json index;
  if (absl::Status s = parse_untrusted_json(text.str(), &index); !s.ok()) {
    return bad_index(index_path, absl::StrCat("not valid JSON: ", s.message()));
  }
  if (!index.is_object()) return bad_index(index_path, "must be a JSON object");
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    return bad_index(index_path, "\"weight_map\" (object of tensor name -> shard file) is missing");
  }
  SafetensorsFile out;
  if (index.contains("metadata")) {
    const nlohmann::json& meta = index["metadata"];
    if (!meta.is_object() && !meta.is_null()) return bad_index(index_path, "\"metadata\" must be an object");
    if (meta.is_object()) {
      for (const auto& [key, value] : meta.items()) {
        out.metadata[key] = value.is_string() ? value.get<std::string>() : json_excerpt(value, 1024);
      }
    }
  }
  std::map<std::string, std::set<std::string>> names_by_shard;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || !is_plain_file_name(file.get<std::string>())) {
      return bad_index(index_path,
                       absl::StrCat("weight_map['", capped_excerpt(name, kJsonExcerptChars),
                                    "'] must be a file name in the index's folder, got ", json_excerpt(file)));
    }
    if (!wanted || wanted(name)) names_by_shard[file.get<std::string>()].insert(name);
  }
  const fs::path dir = fs::path(index_path).parent_path();
  for (const auto& [file, names] : names_by_shard) {
    auto shard = load_safetensors((dir / file).string(), wanted);
    if (!shard.ok()) return shard.status();
    for (auto& [name, tensor] : shard->tensors) {
      if (!names.contains(name)) {
        return bad_index(index_path, absl::StrCat("shard ", file, " holds tensor '", name,
                                                  "', which the weight_map does not assign to it"));
      }
      out.tensors.emplace(name, std::move(tensor));
    }
    for (const std::string& name : names) {
      if (!out.tensors.contains(name)) {
        return bad_index(index_path, absl::StrCat("weight_map assigns tensor '", name, "' to ", file,
                                                  ", which does not contain it"));
      }
    }
  }
  return out;
}

absl::StatusOr<SafetensorsFile> load_safetensors_checkpoint(const std::string& dir, const TensorFilter& wanted) {
  const fs::path single = fs::path(dir) / kSafetensorsSingleFile;
  const fs::path index = fs::path(dir) / kSafetensorsIndexFile;
  std::error_code ec;
  if (fs::exists(single, ec)) return load_safetensors(single.string(), wanted);
  if (fs::exists(index, ec)) return load_sharded_safetensors(index.string(), wanted);
  return absl::NotFoundError(
      absl::StrCat(dir, ": neither ", single.filename().string(), " nor ", index.filename().string(), " found"));
}

absl::Status save_sharded_safetensors(const std::string& dir, const NamedTensors& tensors, uint64_t max_shard_bytes,
                                      const SafetensorsMetadata& shard_metadata) {
  if (tensors.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, ": no tensors to save"));
  if (max_shard_bytes == 0) return absl::InvalidArgumentError(absl::StrCat(dir, ": max shard size must be positive"));
  std::vector<uint64_t> sizes;
  uint64_t total_size = 0;
  uint64_t total_parameters = 0;
  std::set<std::string_view> seen;
  for (const auto& [name, tensor] : tensors) {
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor name '", name, "' given more than once"));
    }
    if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor '", name, "' is undefined"));
    sizes.push_back(tensor.numel() * tensor.element_size());
    total_size += sizes.back();
    total_parameters += static_cast<uint64_t>(tensor.numel());
  }
  const std::vector<std::vector<size_t>> plan = plan_shards(sizes, max_shard_bytes);
  const fs::path root(dir);

  if (plan.size() == 1) {  // transformers writes no index for a single shard
    absl::Status s = save_safetensors((root / kSafetensorsSingleFile).string(), tensors, shard_metadata);
    if (!s.ok()) return s;
    return remove_stale_files(root, {std::string(kSafetensorsSingleFile)});
  }

  nlohmann::json weight_map = nlohmann::json::object();
  std::set<std::string> written;
  for (size_t s = 0; s < plan.size(); ++s) {
    const std::string file = shard_name(s, plan.size());
    NamedTensors shard;
    for (size_t i : plan[s]) {
      shard.push_back(tensors[i]);
      weight_map[tensors[i].first] = file;
    }
    absl::Status status = save_safetensors((root / file).string(), shard, shard_metadata);
    if (!status.ok()) return status;
    written.insert(file);
  }
  nlohmann::json index = {
      {"metadata", {{"total_parameters", total_parameters}, {"total_size", total_size}}},
      {"weight_map", std::move(weight_map)},
  };
  // json.dumps(index, indent=2, sort_keys=True) + "\n" in transformers; nlohmann::json sorts keys
  // and ensure_ascii matches Python's default escaping of non-ASCII names.
  std::string content;
  try {
    content = index.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
  } catch (const nlohmann::json::exception& ex) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": cannot encode the index: ", ex.what()));
  }
  absl::Status s = write_file_atomically((root / kSafetensorsIndexFile).string(),
                                         [&](FileWriter& out) { return out.write(content.data(), content.size()); });
  if (!s.ok()) return s;
  written.insert(std::string(kSafetensorsIndexFile));
  return remove_stale_files(root, written);
}

}  // namespace aln::io
