#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// SafeDPO (METHODS.md §1): the pair transform T (keep / swap / drop by the responses' safety flags,
// counted) applied once in prepare(), then -log s(b h - (unsafe_l - unsafe_w) delta), delta in logit
// units. Variants `better`, `safer`, `safe_better` are the paper's DPO baselines on the same data.
// Pairs without safety labels (for example HH-RLHF) are kept with no margin ([D], counted).
std::unique_ptr<Trainer> make_safedpo_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
