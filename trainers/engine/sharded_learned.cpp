#include "trainers/engine/sharded_learned.h"

#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "trainers/engine/fully_sharded.h"
#include "trainers/engine/sharded_adamw.h"

namespace aln::engine {
namespace {

class ShardedLearned final : public trainers::LearnedModel {
 public:
  ShardedLearned(const DataParallel& dp, model::DecoderModel whole, const optim::AdamWOptions& options,
                 bool deterministic, std::shared_ptr<ShardedLearnedMaker::Kept> kept)
      : model_(std::move(whole)),
        shards_(std::make_unique<FullySharded>(dp, model_, deterministic)),
        adam_(std::make_unique<ShardedAdamW>(options, dp, Sharding::kFull, model_.tensors(), shards_.get())),
        kept_(std::move(kept)) {
    kept_->models += 1;
    kept_->bytes += shards_->shard_bytes();
    kept_->whole_bytes += shards_->whole_bytes();
  }
  ~ShardedLearned() override {
    kept_->models -= 1;
    kept_->bytes -= shards_->shard_bytes();
    kept_->whole_bytes -= shards_->whole_bytes();
  }
  ShardedLearned(const ShardedLearned&) = delete;
  ShardedLearned& operator=(const ShardedLearned&) = delete;

  model::DecoderModel& model() override { return model_; }
  const model::DecoderModel& model() const override { return model_; }
  bool collective() const override { return true; }

  double step(double lr, double max_norm, const std::function<void(std::map<std::string, at::Tensor>&)>&) override {
    // The gradients were reduce-scattered during backward: each rank holds its range of the sum.
    optim::TensorMap& params = model_.tensors();
    const double norm = adam_->clip_grad_norm(params, max_norm, {}, "").item<double>();
    if (std::isfinite(norm)) adam_->step(params, lr);
    adam_->clear_gradients(params);
    return norm;
  }

  std::pair<optim::TensorMap, optim::TensorMap> whole_state() const override {
    std::optional<model::DecoderModel> whole = shards_->whole_on_lead();
    optim::TensorMap moments = adam_->state();  // whole on rank 0 only
    if (!whole) return {};
    return {whole->tensors(), std::move(moments)};
  }

  void load_whole_state(const optim::TensorMap& params, const optim::TensorMap& optimizer) override {
    for (const auto& [name, t] : params) shards_->take(name, t);
    adam_->load_state(optimizer);
  }

 private:
  // In this order: the shards detach from the model, and AdamW lets go of them, before the model goes.
  model::DecoderModel model_;
  std::unique_ptr<FullySharded> shards_;
  std::unique_ptr<ShardedAdamW> adam_;
  std::shared_ptr<ShardedLearnedMaker::Kept> kept_;
};

}  // namespace

std::unique_ptr<trainers::LearnedModel> ShardedLearnedMaker::make(model::DecoderModel whole,
                                                                  const optim::AdamWOptions& options) const {
  return std::make_unique<ShardedLearned>(dp_, std::move(whole), options, deterministic_, kept_);
}

}  // namespace aln::engine
