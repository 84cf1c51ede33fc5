#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// DPO with loss types sigmoid, ipo, hinge, robust and label smoothing (TRL's definitions).
std::unique_ptr<Trainer> make_dpo_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
