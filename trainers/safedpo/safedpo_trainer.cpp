#include "trainers/safedpo/safedpo_trainer.h"

#include <ATen/ATen.h>

#include "trainers/dpo/pair_logprobs.h"

namespace aln::trainers {
namespace {

class SafeDpoTrainer final : public Trainer {
 public:
  explicit SafeDpoTrainer(const aln::v1::SafeDpoOptions& o) : options_(o) {}
  std::string name() const override { return "safedpo"; }
  Needs needs() const override { return {RecordKind::kPreferencePairs, ModelHead::kLanguageModel, {ReferenceQuery::kPairSums}}; }

  absl::Status prepare(PrepareContext& ctx) override {
    std::vector<buffer::Example> kept;
    double keep = 0, swap = 0, drop = 0, unlabeled = 0;
    for (buffer::Example& e : *ctx.examples) {
      switch (options_.variant()) {
        case aln::v1::BETTER:
          break;
        case aln::v1::SAFER:
          if (e.safer < 0) {
            ++drop;
            continue;
          }
          if (e.safer == 1) {
            std::swap(e.chosen, e.rejected);
            std::swap(e.unsafe_chosen, e.unsafe_rejected);
            ++swap;
          }
          break;
        case aln::v1::SAFE_BETTER:
          if (e.unsafe_chosen == 1) {  // y_w known unsafe
            ++drop;
            continue;
          }
          break;
        default: {  // SAFEDPO: the transform T
          if (e.unsafe_chosen < 0) {
            if (options_.drop_unlabeled()) {
              ++drop;
              continue;
            }
            ++unlabeled;
            e.unsafe_chosen = e.unsafe_rejected = 0;  // a plain helpfulness pair: no margin
            break;
          }
          // y_w unsafe and y_l's label unknown: swapping could make an unsafe response the winner,
          // so the pair is dropped; y_w safe and y_l unknown: kept, with no margin.
          if (e.unsafe_chosen == 1 && e.unsafe_rejected < 0) {
            ++drop;
            continue;
          }
          if (e.unsafe_rejected < 0) e.unsafe_rejected = 0;
          const auto action = kernels::safedpo_action(e.unsafe_chosen == 1, e.unsafe_rejected == 1);
          if (action == kernels::SafePairAction::kDrop) {
            ++drop;
            continue;
          }
          if (action == kernels::SafePairAction::kSwap) {
            std::swap(e.chosen, e.rejected);
            std::swap(e.unsafe_chosen, e.unsafe_rejected);
            ++swap;
          } else {
            ++keep;
          }
        }
      }
      kept.push_back(std::move(e));
    }
    *ctx.examples = std::move(kept);
    (*ctx.counters)["safedpo_kept"] = keep;
    (*ctx.counters)["safedpo_swapped"] = swap;
    (*ctx.counters)["safedpo_dropped"] = drop;
    (*ctx.counters)["safedpo_unlabeled"] = unlabeled;
    // An empty result is the engine's to report: an empty held-out set is fine, an empty training
    // set is not.
    return absl::OkStatus();
  }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    PairForward f = pair_forward(batch, ctx);
    kernels::PairLossOutput l;
    if (options_.variant() == aln::v1::SAFEDPO || options_.variant() == aln::v1::SAFE_DPO_VARIANT_UNSPECIFIED) {
      std::vector<double> uw, ul;
      for (const auto* e : batch) {
        uw.push_back(e->unsafe_chosen == 1 ? 1.0 : 0.0);
        ul.push_back(e->unsafe_rejected == 1 ? 1.0 : 0.0);
      }
      const auto options = f.logprobs.policy_chosen.options();  // its dtype and device
      l = kernels::safedpo_loss(f.logprobs, at::tensor(uw, at::kDouble).to(options),
                                at::tensor(ul, at::kDouble).to(options), options_.beta(), options_.delta());
    } else {
      l = kernels::dpo_loss(f.logprobs, kernels::DpoLossType::kSigmoid, options_.beta(), 0.0);
    }
    return pair_loss_output(f, l);
  }

 private:
  aln::v1::SafeDpoOptions options_;
};

}  // namespace

std::unique_ptr<Trainer> make_safedpo_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<SafeDpoTrainer>(stage.trainer().safedpo());
}

}  // namespace aln::trainers
