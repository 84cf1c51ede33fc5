#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// GRPO (DeepSeekMath): on-policy group sampling, group-relative advantages, the clipped ratio and
// the k3 KL to the reference; sequence-mean or token-mean normalisation.
std::unique_ptr<Trainer> make_grpo_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
