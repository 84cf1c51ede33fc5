#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// TDPO (variants 1 and 2): DPO with the sequential KL(pi_ref || pi) over the full vocabulary.
std::unique_ptr<Trainer> make_tdpo_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
