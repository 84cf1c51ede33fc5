#pragma once
// Shared by TDPO and Ra-DPO: the pair loss with full-vocabulary terms at every response position,
// computed in chunks of positions so that neither model's [positions, vocab] logits are ever held
// whole. Pass 1 (no graph) projects a chunk of policy and reference hidden states to the
// vocabulary, keeps per-position log-probs and divergence terms, and sums them per sequence; the
// loss and its derivatives with respect to those sums follow on [2 x pairs] numbers. Pass 2 (only
// when gradients are on) recomputes each chunk's logits, forms the analytic gradient with respect to
// them (kernels/token_level.h) and contracts it at once into gradients for the hidden states
// [positions, hidden] and the output projection [vocab, hidden]. A surrogate term carries those into
// autograd, so the engine's backward() reaches every parameter. Peak extra memory: a few
// [chunk, vocab] buffers and one [vocab, hidden] accumulator.
#include <memory>
#include <string>

#include "kernels/token_level.h"
#include "trainers/trainer.h"

namespace aln::trainers {

struct TokenLevelSettings {
  kernels::DivergenceOptions divergence;
  kernels::PairVariant variant = kernels::PairVariant::kTwo;
  double beta = 0.1;
  double alpha = 0.5;
  int64_t chunk = 64;
  std::string metric_name;  // "seqkl" or "risk": exported as <name>_chosen / <name>_rejected
};

LossOutput token_level_pair_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx,
                                 const TokenLevelSettings& settings);

// The trainer both methods are: preference pairs, the reference model itself, this loss.
std::unique_ptr<Trainer> make_token_level_trainer(std::string name, TokenLevelSettings settings);

}  // namespace aln::trainers
