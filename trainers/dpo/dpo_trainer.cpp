#include "trainers/dpo/dpo_trainer.h"

#include "trainers/dpo/pair_logprobs.h"

namespace aln::trainers {
namespace {

kernels::DpoLossType loss_type(aln::v1::DpoLossType t) {
  switch (t) {
    case aln::v1::IPO: return kernels::DpoLossType::kIpo;
    case aln::v1::HINGE: return kernels::DpoLossType::kHinge;
    case aln::v1::ROBUST: return kernels::DpoLossType::kRobust;
    default: return kernels::DpoLossType::kSigmoid;
  }
}

class DpoTrainer final : public Trainer {
 public:
  explicit DpoTrainer(const aln::v1::DpoOptions& o) : options_(o) {}
  std::string name() const override { return "dpo"; }
  Needs needs() const override { return {RecordKind::kPreferencePairs, ModelHead::kLanguageModel, {ReferenceQuery::kPairSums}}; }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    PairForward f = pair_forward(batch, ctx);
    kernels::PairLossOutput l =
        kernels::dpo_loss(f.logprobs, loss_type(options_.loss_type()), options_.beta(), options_.label_smoothing());
    return pair_loss_output(f, l);
  }

 private:
  aln::v1::DpoOptions options_;
};

}  // namespace

std::unique_ptr<Trainer> make_dpo_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<DpoTrainer>(stage.trainer().dpo());
}

}  // namespace aln::trainers
