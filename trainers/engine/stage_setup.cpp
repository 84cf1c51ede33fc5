#include "trainers/engine/stage_setup.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/config/job_config.h"

namespace aln::engine {

absl::StatusOr<PreparedStage> prepare_stage_data(const aln::v1::JobSpec& spec, const aln::v1::StageSpec& stage,
                                                 size_t index, const std::string& stage_name,
                                                 trainers::Trainer& trainer, const TextEncoder& encoder,
                                                 const model::DecoderModel& policy,
                                                 const std::vector<const trainers::RewardModel*>& reward_models,
                                                 bool lead, bool resuming, const Logger& log, const DataSource& source,
                                                 std::function<model::DecoderModel()> whole_policy,
                                                 std::shared_ptr<const trainers::LearnedModelMaker> learned_models) {
  absl::StatusOr<StageData> data = absl::UnknownError("no data");
  if (source.comm == nullptr || source.comm->rank() == 0) {
    data = source.fetch
               ? source.fetch()
               : build_stage_data(stage, trainer.needs().records, encoder,
                                  config::stage_seeds(spec, stage, index).eval_split);
  }
  if (source.comm != nullptr) share_stage_data(*source.comm, data, source.timeout);
  if (!data.ok()) return data.status();
  for (const auto& p : data->problems) log.warning("%s", p);
  PreparedStage out;
  out.data = std::move(*data);
  const TextEncoder* enc = &encoder;
  for (auto [set, c] : {std::pair{&out.data.train, &out.counters}, {&out.data.eval, &out.eval_counters}}) {
    trainers::PrepareContext prep;
    prep.stage = &stage;
    prep.examples = set;
    prep.counters = c;
    prep.training_set = set == &out.data.train;
    prep.policy = &policy;
    prep.whole_policy = whole_policy;
    prep.learned_models = learned_models;
    prep.encode_prompt = [enc](const std::string& text) { return enc->encode(enc->render_prompt({{"user", text}})); };
    prep.encode_response = [enc](const std::string& text) { return enc->encode_response(text); };
    prep.encode_text = [enc](const std::string& text) { return enc->encode(text); };
    prep.decode = [enc](const std::vector<int64_t>& ids) { return enc->decode(ids); };
    prep.eos_id = enc->eos_id();
    prep.pad_id = enc->pad_id();
    prep.seed = config::stage_seeds(spec, stage, index).prepare;
    prep.work_dir = (std::filesystem::path(spec.output_dir()) / stage_name).string();
    prep.lead = lead;
    prep.resuming = resuming;
    prep.reward_models = reward_models;
    absl::Status prepared = trainer.prepare(prep);
    if (!prepared.ok()) return prepared;
  }
  if (out.data.train.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("stage ", stage_name, ": no training examples are left after ",
                                                   trainer.name(), "'s preparation; check the data and its labels"));
  }
  if (spec.eval().max_examples() > 0 && out.data.eval.size() > static_cast<size_t>(spec.eval().max_examples())) {
    out.data.eval.resize(static_cast<size_t>(spec.eval().max_examples()));
  }
  return out;
}

}  // namespace aln::engine
