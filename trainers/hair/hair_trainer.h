#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {

// HAIR (METHODS.md §5, docs/methods/hair.md): per-category shadow reward models learned by IRL from
// Chain-of-Draft demonstrations vs policy samples, and GRPO with hardness-aware advantage scaling.
std::unique_ptr<Trainer> make_hair_trainer(const aln::v1::StageSpec& stage);

}  // namespace aln::trainers
