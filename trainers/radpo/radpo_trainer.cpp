#include "trainers/radpo/radpo_trainer.h"

#include "trainers/dpo/token_level_pairs.h"

namespace aln::trainers {
namespace {

class RadpoTrainer final : public Trainer {
 public:
  explicit RadpoTrainer(const aln::v1::RadpoOptions& o) {
    settings_.divergence.kind =
        o.risk() == aln::v1::ERM ? kernels::TokenDivergence::kEntropic : kernels::TokenDivergence::kCvar;
    settings_.divergence.mu = o.mu();
    settings_.divergence.split_vocabulary = o.split_vocabulary();
    settings_.variant = o.variant() == aln::v1::VARIANT_1 ? kernels::PairVariant::kOne : kernels::PairVariant::kTwo;
    settings_.beta = o.beta();
    settings_.alpha = o.alpha();
    settings_.chunk = o.chunk_size();
    settings_.metric_name = "risk";
  }
  std::string name() const override { return "radpo"; }
  Needs needs() const override {
    Needs n{RecordKind::kPreferencePairs, ModelHead::kLanguageModel, true};
    n.reference_model = true;
    return n;
  }
  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    return token_level_pair_loss(batch, ctx, settings_);
  }

 private:
  TokenLevelSettings settings_;
};

}  // namespace

std::unique_ptr<Trainer> make_radpo_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<RadpoTrainer>(stage.trainer().radpo());
}

}  // namespace aln::trainers
