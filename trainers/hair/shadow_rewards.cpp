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
                             double lr, std::shared_ptr<const LearnedModelMaker> maker)
    : categories_(std::move(categories)), shared_(shared), lr_(lr) {
  ALN_CHECK(!categories_.empty(), "HAIR needs at least one category");
  if (!maker) maker = whole_learned();
  const size_t n = shared_ ? 1 : categories_.size();
  const model::DecoderModel first = score_model_from(base);
  for (size_t i = 0; i < n; ++i) {
    model::DecoderModel copy = first.to(at::kFloat);
    copy.set_requires_grad(false);
    models_.push_back(maker->make(std::move(copy), optim::AdamWOptions{lr_, 0.9, 0.999, 1e-8, 0.0}));
  }
}

size_t ShadowRewards::model_of(const std::string& category) const {
  auto it = std::lower_bound(categories_.begin(), categories_.end(), category);
  ALN_CHECK(it != categories_.end() && *it == category, "no shadow reward model for category \"", category, "\"");
  return shared_ ? 0 : static_cast<size_t>(it - categories_.begin());
}

std::string ShadowRewards::model_name(size_t i) const { return shared_ ? "shared" : categories_[i]; }

double ShadowRewards::step(size_t i, const std::function<void(std::map<std::string, at::Tensor>&)>& sum_gradients) {
  return models_[i]->step(lr_, 1.0, sum_gradients);
}

void ShadowRewards::gather() {
  if (!collective()) return;
  gathered_.clear();
  for (const auto& m : models_) {
    // On the host (rank 0 holds every model's parameters and moments until they are written).
    auto [params, moments] = m->whole_state();
    for (auto* map : {&params, &moments}) {
      for (auto& [name, t] : *map) t = t.to(at::kCPU);
    }
    gathered_.emplace_back(std::move(params), std::move(moments));
  }
}

std::pair<optim::TensorMap, optim::TensorMap> ShadowRewards::whole_state(size_t i) const {
  if (!collective()) return models_[i]->whole_state();
  ALN_CHECK(i < gathered_.size() && !gathered_[i].first.empty(),
            "the sharded shadow reward models were not put together before they were written");
  return gathered_[i];
}

absl::Status ShadowRewards::save(const std::string& dir) const {
  if (collective() && gathered_.size() != models_.size()) {
    return absl::FailedPreconditionError("the sharded shadow reward models were not put together before the save");
  }
  nlohmann::json meta = {{"categories", categories_}, {"shared", shared_}};
  absl::Status s = io::write_text_atomically((fs::path(dir) / "shadow_rewards.json").string(), meta.dump(2) + "\n");
  for (size_t i = 0; s.ok() && i < models_.size(); ++i) {
    const auto [t, state] = whole_state(i);
    s = io::save_safetensors((fs::path(dir) / absl::StrCat("shadow-", i, ".safetensors")).string(),
                             io::NamedTensors(t.begin(), t.end()));
    if (s.ok()) {
      s = io::save_safetensors((fs::path(dir) / absl::StrCat("shadow-", i, ".optimizer.safetensors")).string(),
                               io::NamedTensors(state.begin(), state.end()));
    }
  }
  gathered_.clear();
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
    optim::TensorMap params;
    for (const auto& [name, shape] : model::DecoderModel::expected_shapes(models_[i]->model().config())) {
      auto it = file->tensors.find(name);
      if (it == file->tensors.end() || !it->second.sizes().equals(shape)) {
        return absl::DataLossError(absl::StrCat(path, ": tensor ", name, " missing or of another shape"));
      }
      params.emplace(name, it->second);
    }
    const std::string state_path = (fs::path(dir) / absl::StrCat("shadow-", i, ".optimizer.safetensors")).string();
    auto state = io::load_safetensors(state_path);
    if (!state.ok()) return state.status();
    for (const auto& [key, t] : state->tensors) {
      // A moment has its parameter's shape ("step" is the count).
      const size_t dot = key.rfind(".exp_avg");
      if (key == "step") continue;
      const auto p = dot == std::string::npos ? params.end() : params.find(key.substr(0, dot));
      if (p == params.end() || !t.sizes().equals(p->second.sizes())) {
        return absl::DataLossError(absl::StrCat(state_path, ": ", key, " is no moment of a parameter of this model"));
      }
    }
    models_[i]->load_whole_state(params, state->tensors);
  }
  return absl::OkStatus();
}

absl::Status ShadowRewards::export_models(const std::string& dir) const {
  if (collective() && gathered_.size() != models_.size()) {
    return absl::FailedPreconditionError("the sharded shadow reward models were not put together before the export");
  }
  for (size_t i = 0; i < models_.size(); ++i) {
    const std::string out = (fs::path(dir) / metric_suffix(model_name(i))).string();
    absl::Status s = absl::OkStatus();
    if (!collective()) {
      s = model::save_hf_model(models_[i]->model(), out);
    } else {
      auto whole = model::DecoderModel::from_tensors(models_[i]->model().config(), whole_state(i).first);
      s = whole.ok() ? model::save_hf_model(*whole, out) : whole.status();
    }
    if (!s.ok()) return s;
  }
  gathered_.clear();
  return absl::OkStatus();
}

}  // namespace aln::trainers::hair
