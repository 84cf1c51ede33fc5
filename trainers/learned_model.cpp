#include "trainers/learned_model.h"

#include <ATen/ATen.h>

#include <cmath>
#include <utility>

namespace aln::trainers {
namespace {

class WholeLearned final : public LearnedModel {
 public:
  WholeLearned(model::DecoderModel model, const optim::AdamWOptions& options)
      : model_(std::move(model)), adam_(options) {}
  model::DecoderModel& model() override { return model_; }
  const model::DecoderModel& model() const override { return model_; }
  bool collective() const override { return false; }

  double step(double lr, double max_norm,
              const std::function<void(std::map<std::string, at::Tensor>&)>& sum_gradients) override {
    optim::TensorMap& params = model_.tensors();
    if (sum_gradients) sum_gradients(params);
    const double norm = optim::clip_grad_norm(params, max_norm);
    if (std::isfinite(norm)) adam_.step(params, lr);
    for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
    return norm;
  }

  std::pair<optim::TensorMap, optim::TensorMap> whole_state() const override {
    return {model_.tensors(), adam_.state()};
  }

  void load_whole_state(const optim::TensorMap& params, const optim::TensorMap& optimizer) override {
    for (auto& [name, t] : model_.tensors()) t.detach().copy_(params.at(name));
    adam_.load_state(optimizer);
  }

 private:
  model::DecoderModel model_;
  optim::AdamW adam_;
};

class WholeMaker final : public LearnedModelMaker {
 public:
  std::unique_ptr<LearnedModel> make(model::DecoderModel whole, const optim::AdamWOptions& options) const override {
    return std::make_unique<WholeLearned>(std::move(whole), options);
  }
};

}  // namespace

std::shared_ptr<const LearnedModelMaker> whole_learned() { return std::make_shared<WholeMaker>(); }

}  // namespace aln::trainers
