#include "trainers/tdpo/tdpo_trainer.h"

#include "trainers/dpo/token_level_pairs.h"

namespace aln::trainers {
namespace {

class TdpoTrainer final : public Trainer {
 public:
  explicit TdpoTrainer(const aln::v1::TdpoOptions& o) {
    settings_.divergence.kind = kernels::TokenDivergence::kSequenceKl;
    settings_.variant = o.variant() == aln::v1::VARIANT_1 ? kernels::PairVariant::kOne : kernels::PairVariant::kTwo;
    settings_.beta = o.beta();
    settings_.alpha = o.alpha();
    settings_.chunk = o.chunk_size();
    settings_.metric_name = "seqkl";
  }
  std::string name() const override { return "tdpo"; }
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

std::unique_ptr<Trainer> make_tdpo_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<TdpoTrainer>(stage.trainer().tdpo());
}

}  // namespace aln::trainers
