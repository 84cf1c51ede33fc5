#include "trainers/tdpo/tdpo_trainer.h"

#include "trainers/dpo/token_level_pairs.h"

namespace aln::trainers {

std::unique_ptr<Trainer> make_tdpo_trainer(const aln::v1::StageSpec& stage) {
  const aln::v1::TdpoOptions& o = stage.trainer().tdpo();
  TokenLevelSettings s;
  s.divergence.kind = kernels::TokenDivergence::kSequenceKl;
  s.variant = o.variant() == aln::v1::VARIANT_1 ? kernels::PairVariant::kOne : kernels::PairVariant::kTwo;
  s.beta = o.beta();
  s.alpha = o.alpha();
  s.chunk = o.chunk_size();
  s.metric_name = "seqkl";
  return make_token_level_trainer("tdpo", s);
}

}  // namespace aln::trainers
