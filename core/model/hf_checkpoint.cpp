#include "core/model/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "absl/strings/str_cat.h"
#include "core/io/atomic_file.h"
#include "core/io/sharded_checkpoint.h"

namespace aln::model {
namespace {

namespace fs = std::filesystem;

// config.json is written like the weights (fsync'ed before the directory is renamed into place), so a
// checkpoint that says it is complete is complete after a crash too.
absl::Status write_text(const fs::path& path, const std::string& text) {
  return io::write_text_atomically(path.string(), text);
}

}  // namespace

absl::StatusOr<DecoderModel> load_hf_model(const std::string& dir, at::ScalarType dtype) {
  const fs::path root(dir);
  auto config = load_hf_config((root / "config.json").string());
  if (!config.ok()) return config.status();
  auto loaded = io::load_safetensors_checkpoint(dir);
  if (!loaded.ok()) return loaded.status();
  TensorMap tensors;
  for (auto& [name, t] : loaded->tensors) tensors.emplace(name, t.to(dtype));
  auto model = DecoderModel::from_tensors(*config, std::move(tensors));
  if (!model.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", model.status().message()));
  return model;
}

absl::StatusOr<DecoderModel> load_hf_stage(const std::string& dir, int64_t first, int64_t end, at::ScalarType dtype) {
  const fs::path root(dir);
  auto config = load_hf_config((root / "config.json").string());
  if (!config.ok()) return config.status();
  const ModelConfig& c = *config;
  auto loaded = io::load_safetensors_checkpoint(
      dir, [&c, first, end](const std::string& name) { return DecoderModel::stage_owns(c, name, first, end); });
  if (!loaded.ok()) return loaded.status();
  TensorMap tensors;
  for (auto& [name, t] : loaded->tensors) tensors.emplace(name, t.to(dtype));
  auto model = DecoderModel::stage_from_tensors(c, std::move(tensors), first, end);
  if (!model.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", model.status().message()));
  return model;
}

namespace {

// config.json and what `weights` writes into the directory, written into `dir.tmp-<pid>` and then
// renamed over `dir` (two renames: a crash leaves either the old or the new directory).
absl::Status publish_model_dir(const ModelConfig& config, const std::string& dir,
                               const std::function<absl::Status(const fs::path& tmp)>& weights) {
  const fs::path target(dir);
  const fs::path tmp = fs::path(dir + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(tmp.string(), ": cannot create: ", ec.message()));
  absl::Status s = write_text(tmp / "config.json", to_hf_config_json(config));
  if (s.ok()) s = weights(tmp);
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  const fs::path old = fs::path(dir + ".old-" + std::to_string(::getpid()));
  if (fs::exists(target)) fs::rename(target, old, ec);
  fs::rename(tmp, target, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot move ", tmp.string(), " to ", dir, ": ", ec.message()));
  fs::remove_all(old, ec);
  return absl::OkStatus();
}

}  // namespace

absl::Status save_hf_model(const DecoderModel& model, const std::string& dir, at::ScalarType dtype,
                           int64_t max_shard_bytes) {
  return publish_model_dir(model.config(), dir, [&](const fs::path& tmp) {
    io::NamedTensors out;
    for (const auto& [name, t] : model.checkpoint_tensors()) out.emplace_back(name, t.detach().to(dtype));
    // One file when it fits (as transformers writes small models), else shards plus the index.
    return io::save_sharded_safetensors(tmp.string(), out,
                                        max_shard_bytes > 0 ? static_cast<uint64_t>(max_shard_bytes) : UINT64_MAX / 2);
  });
}

absl::Status save_hf_model_streamed(const ModelConfig& config, const std::vector<io::TensorSpec>& specs,
                                    const std::string& dir,
                                    const std::function<absl::Status(const io::TensorPut& put)>& produce) {
  return publish_model_dir(config, dir, [&](const fs::path& tmp) {
    return io::save_safetensors_streamed((tmp / io::kSafetensorsSingleFile).string(), specs, produce,
                                         {{"format", "pt"}});  // as save_sharded_safetensors marks its files
  });
}

}  // namespace aln::model
