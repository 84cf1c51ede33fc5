#include "trainers/hair/shadow_rewards.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/model/hf_checkpoint.h"
#include "trainers/hair/demonstrations.h"

namespace aln::trainers::hair {
namespace fs = std::filesystem;

model::DecoderModel score_model_from(const model::DecoderModel& base) {
  if (base.config().head == model::Head::kSequenceScore) return base.to(at::kFloat);
  model::ModelConfig c = base.config();
  c.head = model::Head::kSequenceScore;
  c.num_labels = 1;
  model::TensorMap tensors;
  for (const auto& [name, shape] : model::DecoderModel::expected_shapes(c)) {
    if (name == "score.weight") {
      // Where the base model is (a GPU's), as every other tensor of the copy.
      tensors[name] = at::zeros(shape, base.tensors().begin()->second.options().dtype(at::kFloat));
      continue;
    }
    auto it = base.tensors().find(name);
    ALN_CHECK(it != base.tensors().end(), "cannot make a score model: the base model has no tensor ", name);
    tensors[name] = it->second.detach().to(at::kFloat).clone();
  }
  auto m = model::DecoderModel::from_tensors(c, std::move(tensors));
  ALN_CHECK(m.ok(), "cannot make a score model: ", m.status().message());
  return std::move(*m);
}

ShadowRewards::ShadowRewards(std::vector<std::string> categories, const model::DecoderModel& base, bool shared,
                             double lr)
    : categories_(std::move(categories)), shared_(shared), lr_(lr) {
  ALN_CHECK(!categories_.empty(), "HAIR needs at least one category");
  const size_t n = shared_ ? 1 : categories_.size();
  const model::DecoderModel first = score_model_from(base);
  for (size_t i = 0; i < n; ++i) {
    models_.push_back(first.to(at::kFloat));
    models_.back().set_requires_grad(false);
    optimizers_.emplace_back(optim::AdamWOptions{lr_, 0.9, 0.999, 1e-8, 0.0});
  }
}

size_t ShadowRewards::model_of(const std::string& category) const {
  auto it = std::lower_bound(categories_.begin(), categories_.end(), category);
  ALN_CHECK(it != categories_.end() && *it == category, "no shadow reward model for category \"", category, "\"");
  return shared_ ? 0 : static_cast<size_t>(it - categories_.begin());
}

std::string ShadowRewards::model_name(size_t i) const { return shared_ ? "shared" : categories_[i]; }

double ShadowRewards::step(size_t i) {
  optim::TensorMap& params = models_[i].tensors();
  const double norm = optim::clip_grad_norm(params, 1.0);
  if (std::isfinite(norm)) optimizers_[i].step(params, lr_);
  for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
  return norm;
}

absl::Status ShadowRewards::save(const std::string& dir) const {
  nlohmann::json meta = {{"categories", categories_}, {"shared", shared_}};
  absl::Status s = io::write_text_atomically((fs::path(dir) / "shadow_rewards.json").string(), meta.dump(2) + "\n");
  for (size_t i = 0; s.ok() && i < models_.size(); ++i) {
    const auto& t = models_[i].tensors();
    s = io::save_safetensors((fs::path(dir) / absl::StrCat("shadow-", i, ".safetensors")).string(),
                             io::NamedTensors(t.begin(), t.end()));
    const optim::TensorMap state = optimizers_[i].state();
    if (s.ok()) {
      s = io::save_safetensors((fs::path(dir) / absl::StrCat("shadow-", i, ".optimizer.safetensors")).string(),
                               io::NamedTensors(state.begin(), state.end()));
    }
  }
  return s;
}

absl::Status ShadowRewards::load(const std::string& dir) {
  const std::string meta_path = (fs::path(dir) / "shadow_rewards.json").string();
  std::ifstream in(meta_path);
  auto meta = nlohmann::json::parse(in, nullptr, false);
  if (meta.is_discarded() || !meta.contains("categories") || !meta.contains("shared")) {
    return absl::DataLossError(absl::StrCat(meta_path, ": missing or malformed; the checkpoint cannot resume HAIR"));
  }
  const auto cats = meta["categories"].get<std::vector<std::string>>();
  if (cats != categories_ || meta["shared"].get<bool>() != shared_) {
    return absl::FailedPreconditionError(absl::StrCat(
        meta_path, ": the checkpoint's shadow reward models are for categories [", absl::StrJoin(cats, ", "),
        "] but the stage's data has [", absl::StrJoin(categories_, ", "), "]; resume with the same data and options"));
  }
  for (size_t i = 0; i < models_.size(); ++i) {
    const std::string path = (fs::path(dir) / absl::StrCat("shadow-", i, ".safetensors")).string();
    auto file = io::load_safetensors(path);
    if (!file.ok()) return file.status();
    for (auto& [name, t] : models_[i].tensors()) {
      auto it = file->tensors.find(name);
      if (it == file->tensors.end() || !it->second.sizes().equals(t.sizes())) {
        return absl::DataLossError(absl::StrCat(path, ": tensor ", name, " missing or of another shape"));
      }
      t.detach().copy_(it->second);
    }
    auto state = io::load_safetensors((fs::path(dir) / absl::StrCat("shadow-", i, ".optimizer.safetensors")).string());
    if (!state.ok()) return state.status();
    optimizers_[i].load_state(state->tensors);
  }
  return absl::OkStatus();
}

absl::Status ShadowRewards::export_models(const std::string& dir) const {
  for (size_t i = 0; i < models_.size(); ++i) {
    absl::Status s = model::save_hf_model(models_[i], (fs::path(dir) / metric_suffix(model_name(i))).string());
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace aln::trainers::hair
