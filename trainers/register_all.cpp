// Explicit registration of every built-in trainer (no static-initialiser magic: what exists is
// listed here, in one place). Each method is added as its plugin lands:
//   sft, reward, dpo, safedpo          — alignment core (issue 4)
//   tdpo, radpo, grpo, ptalign, controllable, hair — safety methods (issue 6)
#include "trainers/trainer.h"

namespace aln::trainers {

void register_all(TrainerRegistry& registry) { (void)registry; }

}  // namespace aln::trainers
