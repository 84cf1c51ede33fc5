#pragma once
#include <memory>

#include "trainers/trainer.h"

namespace aln::trainers {

// Controllable safety/helpfulness (METHODS.md §4, docs/methods/controllable.md): self-generated
// answers scored for helpfulness and harmlessness, binned into levels stated by control tokens;
// objectives clm, contrastive and rl; held-out controllability metrics.
std::unique_ptr<Trainer> make_controllable_trainer(const aln::v1::StageSpec& stage);

// Before the job starts: each attribute (helpful, harmless) has a scorer, a reward model of that
// name in the stage or a rule. `where` prefixes the key path ("stages[1]." or "").
absl::Status check_controllable_stage(const aln::v1::StageSpec& stage, const std::string& where);

}  // namespace aln::trainers
