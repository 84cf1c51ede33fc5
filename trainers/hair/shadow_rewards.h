#pragma once
// HAIR's shadow reward models: one per harm category (or one shared, the ablation), each a decoder
// with a score head and its own AdamW, learned by maximum-likelihood IRL: the demonstration should
// outscore the policy's samples, loss -log sigmoid(r(x, y_demo) - r(x, y_sample)). Kept whole on
// every rank, or sharded beside a fully sharded policy (trainers/learned_model.h): then every pass
// is collective (collective()), and checkpoints and exports put the models together first
// (gather(), on every rank).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "core/buffer/buffer.h"
#include "core/model/decoder.h"
#include "core/optim/optimizer.h"
#include "trainers/learned_model.h"

namespace aln::trainers::hair {

// A score-head copy of `base` (float32): a language model's body with a zero-initialised score
// head (so every reward starts at 0), or a deep copy of a model that has one already.
model::DecoderModel score_model_from(const model::DecoderModel& base);

class ShadowRewards {
 public:
  // Models for `categories` (sorted, distinct), all starting from `base`; shared: one model. `maker`
  // keeps them (null: whole in this process); collective when it shards.
  ShadowRewards(std::vector<std::string> categories, const model::DecoderModel& base, bool shared, double lr,
                std::shared_ptr<const LearnedModelMaker> maker = nullptr);

  const std::vector<std::string>& categories() const { return categories_; }
  size_t num_models() const { return models_.size(); }
  // The model that scores `category` (an index into the models); unknown categories are an error.
  size_t model_of(const std::string& category) const;
  model::DecoderModel& model(size_t i) { return models_[i]->model(); }
  const model::DecoderModel& model(size_t i) const { return models_[i]->model(); }
  // Passes are collective (sharded models): every rank runs the same ones, in the same order.
  bool collective() const { return models_.front()->collective(); }
  // The category names a model serves (for file names and metrics): the category, or "shared".
  std::string model_name(size_t i) const;

  // One AdamW update of model i from the gradients its tensors hold, summed over the ranks
  // (`sum_gradients`, for whole models) and cleared afterwards; the gradient norm is clipped to 1
  // first (rewards are unbounded, a single bad batch must not blow up the shadow reward). Returns the
  // norm before clipping.
  double step(size_t i, const std::function<void(std::map<std::string, at::Tensor>&)>& sum_gradients);

  // Every rank, before save() or export_models() on rank 0: sharded models are put together there
  // (collective); whole ones need nothing.
  void gather();
  // Checkpoints: tensors and optimizer state per model, and the category list (checked on load).
  absl::Status save(const std::string& dir) const;
  absl::Status load(const std::string& dir);
  // Hugging Face directories <dir>/<model name> (transformers reads them as *ForSequenceClassification).
  absl::Status export_models(const std::string& dir) const;

 private:
  std::vector<std::string> categories_;
  bool shared_;
  double lr_;
  std::vector<std::unique_ptr<LearnedModel>> models_;
  // Put together by gather() (sharded models, rank 0): each model's parameters and AdamW state.
  // Freed by save() and export_models() (mutable: they are const), so rank 0 holds them briefly.
  mutable std::vector<std::pair<optim::TensorMap, optim::TensorMap>> gathered_;
  // The parameters and AdamW state of model i, whole: gathered_, or the model's own.
  std::pair<optim::TensorMap, optim::TensorMap> whole_state(size_t i) const;
};

}  // namespace aln::trainers::hair
