#pragma once
// A stage's examples as the trainer will see them: read and tokenised, transformed once by the
// trainer's prepare (filters, swaps, self-generation), the held-out set capped at eval.max_examples.
// Shared by the policy ranks and the reference ranks (placement: separate), which must build the
// very same examples to compute their reference log-probs.
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/model/decoder.h"
#include "trainers/engine/data_share.h"
#include "trainers/engine/examples.h"
#include "trainers/engine/text_encoder.h"
#include "trainers/trainer.h"

namespace aln::engine {

struct PreparedStage {
  StageData data;
  // Counters of the training set (exported) and of the held-out set (eval log only).
  std::map<std::string, double> counters, eval_counters;
};

absl::StatusOr<PreparedStage> prepare_stage_data(
    const aln::v1::JobSpec& spec, const aln::v1::StageSpec& stage, size_t index, const std::string& stage_name,
    trainers::Trainer& trainer, const TextEncoder& encoder, const model::DecoderModel& policy,
    const std::vector<const trainers::RewardModel*>& reward_models, bool lead, bool resuming, const Logger& log,
    const DataSource& source = {}, std::function<model::DecoderModel()> whole_policy = {},
    std::shared_ptr<const trainers::LearnedModelMaker> learned_models = nullptr);

}  // namespace aln::engine
