#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// Supervised fine-tuning: mean token NLL over response tokens (prompt and padding never count).
std::unique_ptr<Trainer> make_sft_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
