#include "core/model/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/model/safetensors.h"

namespace aln::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

absl::Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.good()) return absl::DataLossError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecoderModel> load_hf_model(const std::string& dir, at::ScalarType dtype) {
  const fs::path root(dir);
  auto config = load_hf_config((root / "config.json").string());
  if (!config.ok()) return config.status();
  TensorMap tensors;
  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  std::vector<fs::path> files;
  if (fs::exists(single)) {
    files.push_back(single);
  } else if (fs::exists(index)) {
    json j;
    try {
      std::ifstream in(index);
      j = json::parse(in);
    } catch (const json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": invalid JSON: ", e.what()));
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": weight_map: missing or not an object"));
    }
    std::set<std::string> shard_names;
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) return absl::InvalidArgumentError(absl::StrCat(index.string(), ": weight_map.", name, ": not a file name"));
      shard_names.insert(file.get<std::string>());
    }
    for (const auto& s : shard_names) files.push_back(root / s);
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  for (const auto& f : files) {
    auto loaded = load_safetensors(f.string());
    if (!loaded.ok()) return loaded.status();
    for (auto& [name, t] : loaded->tensors) {
      if (tensors.count(name) != 0) return absl::InvalidArgumentError(absl::StrCat(f.string(), ": tensor '", name, "' appears in two shards"));
      tensors.emplace(name, t.to(dtype));
    }
  }
  auto model = DecoderModel::from_tensors(*config, std::move(tensors));
  if (!model.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", model.status().message()));
  return model;
}

absl::Status save_hf_model(const DecoderModel& model, const std::string& dir, at::ScalarType dtype,
                           int64_t max_shard_bytes) {
  const fs::path target(dir);
  const fs::path tmp = fs::path(dir + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(tmp.string(), ": cannot create: ", ec.message()));
  absl::Status s = write_text(tmp / "config.json", to_hf_config_json(model.config()));
  if (!s.ok()) return s;
  TensorMap out;
  for (const auto& [name, t] : model.checkpoint_tensors()) out.emplace(name, t.detach().to(dtype));
  int64_t total = 0;
  for (const auto& [name, t] : out) total += static_cast<int64_t>(t.nbytes());
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  if (max_shard_bytes <= 0 || total <= max_shard_bytes) {
    s = save_safetensors((tmp / "model.safetensors").string(), out, metadata);
    if (!s.ok()) return s;
  } else {
    // Greedy shards in name order, as transformers does; each file under max_shard_bytes unless a
    // single tensor is larger.
    std::vector<TensorMap> shards(1);
    int64_t current = 0;
    for (const auto& [name, t] : out) {
      const int64_t bytes = static_cast<int64_t>(t.nbytes());
      if (current > 0 && current + bytes > max_shard_bytes) {
        shards.emplace_back();
        current = 0;
      }
      shards.back().emplace(name, t);
      current += bytes;
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", json::object()}};
    for (size_t k = 0; k < shards.size(); ++k) {
      const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, shards.size());
      s = save_safetensors((tmp / file).string(), shards[k], metadata);
      if (!s.ok()) return s;
      for (const auto& [name, t] : shards[k]) index["weight_map"][name] = file;
    }
    s = write_text(tmp / "model.safetensors.index.json", index.dump(2));
    if (!s.ok()) return s;
  }
  // Replace the target in two renames so a crash leaves either the old or the new directory.
  const fs::path old = fs::path(dir + ".old-" + std::to_string(::getpid()));
  if (fs::exists(target)) fs::rename(target, old, ec);
  fs::rename(tmp, target, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot move ", tmp.string(), " to ", dir, ": ", ec.message()));
  fs::remove_all(old, ec);
  return absl::OkStatus();
}

}  // namespace aln::model
