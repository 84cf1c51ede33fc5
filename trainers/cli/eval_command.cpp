// `aln eval [JOB.yaml] [--model DIR] [--reference DIR] [--stage NAME] [--json] [--out FILE]`:
// evaluates a model on a stage's held-out set exactly as training does (same data, split, chat
// format and truncation), and prints a table or JSON.
#include <ATen/Parallel.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/config/job_config.h"
#include "core/model/hf_checkpoint.h"
#include "core/status.h"
#include "trainers/cli/commands.h"
#include "trainers/engine/evaluate.h"
#include "trainers/engine/examples.h"
#include "trainers/engine/text_encoder.h"
#include "trainers/trainer.h"

namespace aln::cli {
namespace {

constexpr const char* kUsage =
    "usage: aln eval [JOB.yaml] [--model DIR] [--reference DIR] [--stage NAME] [--json] [--out FILE]\n"
    "  Evaluates --model (default: the job's <output_dir>/final) on the held-out set of a stage of\n"
    "  JOB.yaml (default: the built-in quickstart; default stage: the last). Without a reference\n"
    "  model (--reference, or the stage's reference.path) only the metrics of the policy alone are\n"
    "  reported (preference and safe-vs-unsafe accuracy); with one, also the trainer's loss, reward\n"
    "  margins, mean log-ratios and the KL estimate. --out writes the JSON to a file.\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "aln eval: %s\n%s", message.c_str(), kUsage);
  return 2;
}

absl::StatusOr<nlohmann::json> evaluate_job(const aln::v1::JobSpec& spec, const std::string& model_dir,
                                            std::string reference_dir, const std::string& stage_name) {
  const auto stages = config::effective_stages(spec);
  int index = static_cast<int>(stages.size()) - 1;
  if (!stage_name.empty()) {
    index = -1;
    for (size_t s = 0; s < stages.size(); ++s) {
      if (stages[s].name() == stage_name) index = static_cast<int>(s);
    }
    if (index < 0)
      return absl::InvalidArgumentError(absl::StrCat("--stage: the job has no stage named '", stage_name, "'"));
  }
  const aln::v1::StageSpec& stage = stages[static_cast<size_t>(index)];
  const std::string method = config::method_name(stage.trainer());
  trainers::TrainerRegistry registry("trainer");
  trainers::register_all(registry);
  auto trainer = registry.create(method, stage);
  if (!trainer.ok()) return trainer.status();

  auto encoder = engine::load_text_encoder(spec.model().tokenizer(), spec.model().chat_format());
  if (!encoder.ok()) return encoder.status();
  // The job's control tokens, with the same ids as in training.
  if (auto extra = trainers::job_special_tokens(spec); !extra.empty()) (*encoder)->add_special_tokens(extra);
  auto policy = model::load_hf_model(model_dir);
  if (!policy.ok()) return policy.status();
  // The same seed as training, so the held-out split is the one training never saw.
  const config::StageSeeds seeds = config::stage_seeds(spec, stage, static_cast<size_t>(index));
  auto data = engine::build_stage_data(stage, (*trainer)->needs().records, **encoder, seeds.eval_split);
  if (!data.ok()) return data.status();
  std::map<std::string, double> counters;
  trainers::PrepareContext prep;
  prep.stage = &stage;
  prep.examples = &data->eval;
  prep.counters = &counters;
  prep.training_set = false;
  prep.policy = &*policy;
  const engine::TextEncoder* enc = encoder->get();
  prep.encode_prompt = [enc](const std::string& text) { return enc->encode(enc->render_prompt({{"user", text}})); };
  prep.encode_response = [enc](const std::string& text) { return enc->encode_response(text); };
  prep.encode_text = [enc](const std::string& text) { return enc->encode(text); };
  prep.decode = [enc](const std::vector<int64_t>& ids) { return enc->decode(ids); };
  prep.eos_id = enc->eos_id();
  prep.pad_id = enc->pad_id();
  prep.seed = seeds.prepare;
  const std::string stage_label = stage.name().empty() ? absl::StrCat("stage", index + 1) : stage.name();
  prep.work_dir = (std::filesystem::path(spec.output_dir()) / stage_label).string();
  prep.lead = false;     // evaluation writes nothing into the run's directory
  prep.resuming = true;  // reuse what training built there (self-generated data) when it exists
  absl::Status prepared = (*trainer)->prepare(prep);
  if (!prepared.ok()) return prepared;
  if (spec.eval().max_examples() > 0 && data->eval.size() > static_cast<size_t>(spec.eval().max_examples())) {
    data->eval.resize(static_cast<size_t>(spec.eval().max_examples()));
  }
  if (data->eval.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("stage ", stage.name(),
                                                   " has no held-out examples; set data.eval "
                                                   "or data.eval_fraction > 0 in the job file"));
  }
  if (reference_dir.empty()) reference_dir = stage.reference().path();
  std::optional<model::DecoderModel> reference;
  if (!reference_dir.empty()) {
    auto loaded = model::load_hf_model(reference_dir);
    if (!loaded.ok()) return loaded.status();
    reference = std::move(*loaded);
  }
  const bool needs_reference = !(*trainer)->needs().reference.empty();
  const bool with_loss = !needs_reference || reference.has_value();
  // What rollout-based trainers need: the same seed as training's evaluation, the tokenizer for rule
  // rewards, and the stage's reward models.
  std::vector<model::DecoderModel> reward_models;
  for (const auto& rm : stage.reward_models()) {
    auto loaded = model::load_hf_model(rm.path());
    if (!loaded.ok()) return loaded.status();
    reward_models.push_back(std::move(*loaded));
  }
  trainers::StepContext extras;
  extras.decode = [enc = encoder->get()](const std::vector<int64_t>& ids) { return enc->decode(ids); };
  extras.eos_id = (*encoder)->eos_id();
  extras.encode_text = [enc](const std::string& text) { return enc->encode(text); };
  extras.seed = seeds.sampling;
  std::vector<trainers::LocalRewardModel> scorers(reward_models.begin(), reward_models.end());
  for (const auto& rm : scorers) extras.reward_models.push_back(&rm);
  engine::MetricMap m =
      engine::evaluate(**trainer, *policy, reference ? &*reference : nullptr, data->eval,
                       stage.optimizer().micro_batch_size(), (*encoder)->pad_id(), with_loss, &extras);
  nlohmann::json out = {{"model", model_dir}, {"reference", reference_dir},    {"stage", stage.name()},
                        {"trainer", method},  {"examples", data->eval.size()}, {"metrics", m}};
  for (const auto& [k, v] : counters) out["data"][k] = v;
  if (needs_reference && !reference) {
    out["note"] = "no reference model: loss and reward metrics need --reference DIR";
  }
  return out;
}

}  // namespace

int run_eval(const Args& args) {
  std::string file, model_dir, reference_dir, stage, out_file;
  bool as_json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= args.size()) return false;
      *out = args[++i];
      return true;
    };
    if (a == "--model" && value(&model_dir)) continue;
    if (a == "--reference" && value(&reference_dir)) continue;
    if (a == "--stage" && value(&stage)) continue;
    if (a == "--out" && value(&out_file)) continue;
    if (a == "--json") {
      as_json = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (!a.empty() && a[0] == '-') return usage_error(absl::StrCat("unknown option or missing value: ", a));
    if (!file.empty()) return usage_error("one job file at most");
    file = a;
  }
  auto loaded =
      file.empty() ? config::load_job_text(default_job_yaml(), "<built-in quickstart>") : config::load_job_file(file);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
    return 2;
  }
  if (loaded->spec.runtime().threads() > 0) at::set_num_threads(loaded->spec.runtime().threads());
  if (model_dir.empty()) model_dir = (std::filesystem::path(loaded->spec.output_dir()) / "final").string();
  absl::StatusOr<nlohmann::json> result = absl::UnknownError("not run");
  absl::Status status = capture_status([&]() -> absl::Status {
    result = evaluate_job(loaded->spec, model_dir, reference_dir, stage);
    return result.status();
  });
  if (!status.ok()) {
    std::fprintf(stderr, "aln eval: %s\n", std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound ? 2 : 1;
  }
  const std::string text = result->dump(2) + "\n";
  if (!out_file.empty()) {
    std::ofstream out(out_file);
    out << text;
    if (!out) {
      std::fprintf(stderr, "aln eval: cannot write %s\n", out_file.c_str());
      return 1;
    }
  }
  if (as_json) {
    std::fputs(text.c_str(), stdout);
  } else {
    std::printf("%s on stage %s (%s), %lld held-out examples\n", model_dir.c_str(),
                (*result)["stage"].get<std::string>().c_str(), (*result)["trainer"].get<std::string>().c_str(),
                static_cast<long long>((*result)["examples"].get<int64_t>()));
    for (auto it = (*result)["metrics"].begin(); it != (*result)["metrics"].end(); ++it) {
      std::printf("  %-26s %12.6f\n", it.key().c_str(), it->get<double>());
    }
    if (result->contains("note")) std::printf("note: %s\n", (*result)["note"].get<std::string>().c_str());
  }
  return 0;
}

}  // namespace aln::cli
