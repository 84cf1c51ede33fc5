#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// PT-ALIGN: likelihood on positive responses plus fine-grained unlikelihood on toxic ones, on seed
// pairs optionally expanded by the policy's own generation (METHODS.md §2).
std::unique_ptr<Trainer> make_ptalign_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
