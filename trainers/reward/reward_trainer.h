#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {
// Bradley-Terry reward model: -log s(r(x, y_w) - r(x, y_l)) with r read at the last real token.
std::unique_ptr<Trainer> make_reward_trainer(const aln::v1::StageSpec& stage);
}  // namespace aln::trainers
