#include "trainers/radpo/radpo_trainer.h"

#include "trainers/dpo/token_level_pairs.h"

namespace aln::trainers {

std::unique_ptr<Trainer> make_radpo_trainer(const aln::v1::StageSpec& stage) {
  const aln::v1::RadpoOptions& o = stage.trainer().radpo();
  TokenLevelSettings s;
  s.divergence.kind = o.risk() == aln::v1::ERM ? kernels::TokenDivergence::kEntropic : kernels::TokenDivergence::kCvar;
  s.divergence.mu = o.mu();
  s.divergence.split_vocabulary = o.split_vocabulary();
  s.variant = o.variant() == aln::v1::VARIANT_1 ? kernels::PairVariant::kOne : kernels::PairVariant::kTwo;
  s.beta = o.beta();
  s.alpha = o.alpha();
  s.chunk = o.chunk_size();
  s.metric_name = "risk";
  return make_token_level_trainer("radpo", s);
}

}  // namespace aln::trainers
