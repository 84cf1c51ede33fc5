// Explicit registration of every built-in trainer (no static-initialiser magic: what exists is
// listed here, in one place).
#include "core/status.h"
#include "trainers/controllable/control_tokens.h"
#include "trainers/controllable/controllable_trainer.h"
#include "trainers/dpo/dpo_trainer.h"
#include "trainers/grpo/grpo_trainer.h"
#include "trainers/hair/hair_trainer.h"
#include "trainers/ptalign/ptalign_trainer.h"
#include "trainers/radpo/radpo_trainer.h"
#include "trainers/reward/reward_trainer.h"
#include "trainers/safedpo/safedpo_trainer.h"
#include "trainers/sft/sft_trainer.h"
#include "trainers/tdpo/tdpo_trainer.h"
#include "trainers/trainer.h"

namespace aln::trainers {

void register_all(TrainerRegistry& registry) {
  ALN_THROW_IF_ERROR(registry.add("sft", make_sft_trainer, "supervised fine-tuning on responses"));
  ALN_THROW_IF_ERROR(registry.add("reward", make_reward_trainer, "Bradley-Terry reward model"));
  ALN_THROW_IF_ERROR(registry.add("dpo", make_dpo_trainer, "DPO (sigmoid, ipo, hinge, robust)"));
  ALN_THROW_IF_ERROR(registry.add("safedpo", make_safedpo_trainer, "SafeDPO with the safety transform and margin"));
  ALN_THROW_IF_ERROR(registry.add("tdpo", make_tdpo_trainer, "token-level DPO (sequential KL, variants 1 and 2)"));
  ALN_THROW_IF_ERROR(
      registry.add("radpo", make_radpo_trainer, "risk-aware DPO (CVaR or entropic risk, variants 1 and 2)"));
  ALN_THROW_IF_ERROR(registry.add("ptalign", make_ptalign_trainer, "PT-ALIGN: likelihood + fine-grained unlikelihood"));
  ALN_THROW_IF_ERROR(registry.add("grpo", make_grpo_trainer, "GRPO with on-policy rollouts (rule or reward models)"));
  ALN_THROW_IF_ERROR(
      registry.add("hair", make_hair_trainer, "HAIR: per-category IRL shadow rewards + hardness-aware GRPO"));
  ALN_THROW_IF_ERROR(registry.add("controllable", make_controllable_trainer,
                                  "controllable safety/helpfulness (control tokens; clm, contrastive, rl)"));
}

std::vector<std::string> job_special_tokens(const aln::v1::JobSpec& spec) {
  const int levels = controllable::job_control_levels(spec);
  return levels > 0 ? controllable::control_token_names(levels) : std::vector<std::string>{};
}

absl::Status check_stage(const aln::v1::StageSpec& stage, const std::string& where) {
  if (stage.trainer().has_controllable()) return check_controllable_stage(stage, where);
  return absl::OkStatus();
}

}  // namespace aln::trainers
