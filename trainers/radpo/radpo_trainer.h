#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// Ra-DPO (variants 1 and 2): TDPO with a risk measure (CVaR as the official code, or the entropic
// risk extension) in place of the per-token KL (METHODS.md §3).
std::unique_ptr<Trainer> make_radpo_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
