#include "trainers/controllable/controllable_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "kernels/grpo_loss.h"
#include "trainers/controllable/control_tokens.h"
#include "trainers/controllable/levels.h"
#include "trainers/dpo/pair_logprobs.h"
#include "trainers/rollouts/rollout.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {
namespace {
namespace fs = std::filesystem;
using controllable::LevelScale;

constexpr const char* kAttributes[2] = {"helpful", "harmless"};

// One self-generated answer with its two scores.
struct Sample {
  std::string prompt;  // the prompt text (before control tokens and chat format)
  std::string source;
  std::vector<int64_t> completion;  // ids, end token excluded
  double score[2] = {0, 0};
};

class ControllableTrainer final : public Trainer {
 public:
  explicit ControllableTrainer(const aln::v1::StageSpec& stage) : o_(stage.trainer().controllable()) {
    for (int i = 0; i < stage.reward_models_size(); ++i) {
      for (int a = 0; a < 2; ++a) {
        if (stage.reward_models(i).name() == kAttributes[a]) model_index_[a] = i;
      }
    }
    rules_[0] = o_.helpful_rule();
    rules_[1] = o_.harmless_rule();
    for (int a = 0; a < 2; ++a) {
      ALN_CHECK(model_index_[a] >= 0 || rules_[a] != aln::v1::REWARD_RULE_UNSPECIFIED, "trainer.controllable: no ",
                kAttributes[a], " scorer; add a reward model named \"", kAttributes[a],
                "\" to the stage's reward_models or set trainer.controllable.", kAttributes[a], "_rule");
    }
  }
  std::string name() const override { return "controllable"; }
  Needs needs() const override {
    const bool contrastive = o_.objective() == aln::v1::CONTRASTIVE;
    const bool rl_ref = o_.objective() == aln::v1::RL && o_.rl_beta() > 0;
    // Both use only the reference's log-probs of given sequences (the pairs, or the rollouts for the
    // KL term), so with placement: separate the reference's ranks answer them each step.
    Needs n{RecordKind::kPrompts, ModelHead::kLanguageModel, {}};
    if (contrastive || rl_ref) n.reference.push_back(ReferenceQuery::kTokenLogprobs);
    return n;
  }

  absl::Status prepare(PrepareContext& ctx) override {
    const int levels = o_.levels();
    for (int a = 0; a < 2; ++a) {
      for (int k = 0; k < levels; ++k) {
        const std::string token = absl::StrCat("<|", kAttributes[a], "_", k, "|>");
        const auto ids = ctx.encode_text(token);
        if (ids.size() != 1) {
          return absl::FailedPreconditionError(absl::StrCat(token, " is not a single token; the job's control tokens ",
                                                            "were not added (run through `aln train`)"));
        }
        control_ids_[a].push_back(ids[0]);
      }
    }
    const std::string path =
        (fs::path(ctx.work_dir) / (ctx.training_set ? "controllable_train.jsonl" : "controllable_eval.jsonl")).string();
    std::vector<Sample> samples;
    if (ctx.resuming && fs::exists(path)) {
      auto read = read_samples(path);
      if (!read.ok()) return read.status();
      samples = std::move(*read);
    } else {
      samples = generate(*ctx.examples, ctx);
      if (ctx.lead) {
        absl::Status s = write_samples(path, samples);
        if (!s.ok()) return s;
      }
    }
    auto& counters = *ctx.counters;
    if (ctx.training_set) {
      for (int a = 0; a < 2; ++a) {
        std::vector<double> v;
        for (const auto& s : samples) v.push_back(s.score[a]);
        scales_[a] = LevelScale(std::move(v), levels);
      }
    }
    if (scales_[0].empty()) {
      // Evaluating on its own (`aln eval`): the levels come from the training run's samples.
      const std::string train = (fs::path(ctx.work_dir) / "controllable_train.jsonl").string();
      auto read = fs::exists(train) ? read_samples(train)
                                    : absl::NotFoundError(absl::StrCat(train,
                                                                       ": missing; the levels are defined by the "
                                                                       "training run's samples (run aln train first)"));
      if (!read.ok()) return read.status();
      for (int a = 0; a < 2; ++a) {
        std::vector<double> v;
        for (const auto& smp : *read) v.push_back(smp.score[a]);
        scales_[a] = LevelScale(std::move(v), levels);
      }
    }
    if (scales_[0].empty()) {
      return absl::FailedPreconditionError("the controllable stage's training set produced no samples");
    }
    // Distillation filter: both scores confidently inside their bins.
    std::map<std::string, std::vector<const Sample*>> by_prompt;
    std::vector<std::string> order;
    double kept = 0;
    std::vector<double> level_counts(static_cast<size_t>(2 * levels), 0);
    for (const auto& s : samples) {
      bool keep = true;
      for (int a = 0; a < 2; ++a) {
        const double in = scales_[a].inside(s.score[a]);
        keep = keep && in >= o_.filter_margin() && in <= 1 - o_.filter_margin();
      }
      if (!keep) continue;
      kept += 1;
      for (int a = 0; a < 2; ++a) level_counts[static_cast<size_t>(a * levels + scales_[a].level(s.score[a]))] += 1;
      if (by_prompt.find(s.prompt) == by_prompt.end()) order.push_back(s.prompt);
      by_prompt[s.prompt].push_back(&s);
    }
    if (ctx.training_set) {
      counters["controllable_samples"] = static_cast<double>(samples.size());
      counters["controllable_kept"] = kept;
      for (int a = 0; a < 2; ++a) {
        for (int k = 0; k < levels; ++k) {
          counters[absl::StrCat("controllable_", kAttributes[a], "_level_", k)] =
              level_counts[static_cast<size_t>(a * levels + k)];
        }
      }
    }
    std::vector<buffer::Example> out;
    auto prompt_ids = [&](int h, int s, const std::string& x) {
      return ctx.encode_prompt(controllable::control_prefix(h, s) + x);
    };
    auto with_end = [&](std::vector<int64_t> ids) {
      if (ctx.eos_id >= 0) ids.push_back(ctx.eos_id);
      return ids;
    };
    std::mt19937_64 rng(ctx.seed ^ (ctx.training_set ? 0x636f6e74ULL : 0x6576616cULL));
    for (const auto& x : order) {
      const auto& group = by_prompt[x];
      if (o_.objective() == aln::v1::CLM) {
        for (const auto* s : group) {
          buffer::Example e;
          e.prompt = prompt_ids(scales_[0].level(s->score[0]), scales_[1].level(s->score[1]), x);
          e.response = with_end(s->completion);
          e.prompt_text = x;
          e.source = s->source;
          out.push_back(std::move(e));
        }
      } else if (o_.objective() == aln::v1::CONTRASTIVE) {
        // Each kept answer, under its own levels, against the prompt's answer whose measured levels
        // are farthest from them (any answer of the prompt, filtered or not).
        const auto& all = all_by_prompt(samples, x);
        for (const auto* s : group) {
          const int h = scales_[0].level(s->score[0]), f = scales_[1].level(s->score[1]);
          const Sample* worst = nullptr;
          int far = 0;
          for (const auto* t : all) {
            const int d = std::abs(scales_[0].level(t->score[0]) - h) + std::abs(scales_[1].level(t->score[1]) - f);
            if (d > far) {
              far = d;
              worst = t;
            }
          }
          if (worst == nullptr) continue;
          buffer::Example e;
          e.prompt = prompt_ids(h, f, x);
          e.chosen = with_end(s->completion);
          e.rejected = with_end(worst->completion);
          e.prompt_text = x;
          e.source = s->source;
          out.push_back(std::move(e));
        }
      } else {
        std::uniform_int_distribution<int> pick(0, levels - 1);
        buffer::Example e;
        const int h = pick(rng), f = pick(rng);
        e.prompt = prompt_ids(h, f, x);
        e.prompt_text = x;
        e.source = group.front()->source;
        out.push_back(std::move(e));
      }
    }
    if (ctx.training_set) counters["controllable_examples"] = static_cast<double>(out.size());
    if (!ctx.training_set) {
      // Held-out examples round-robin over prompts (each prompt's first example, then the seconds,
      // ...), so eval.max_examples keeps as many distinct prompts as it can for the
      // controllability metrics.
      std::map<std::string, int> nth;
      std::vector<std::pair<int, size_t>> rank;
      for (size_t i = 0; i < out.size(); ++i) rank.emplace_back(nth[out[i].prompt_text]++, i);
      std::stable_sort(rank.begin(), rank.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<buffer::Example> mixed;
      for (const auto& [r, i] : rank) mixed.push_back(std::move(out[i]));
      out = std::move(mixed);
    }
    *ctx.examples = std::move(out);
    return absl::OkStatus();
  }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    LossOutput out;
    if (o_.objective() == aln::v1::CLM) {
      buffer::SequenceBatch b = buffer::collate_sft(batch, ctx.pad_id).to(ctx.policy->device());
      kernels::ResponseLogprobs lp = response_logprobs(*ctx.policy, b);
      at::Tensor tokens = lp.tokens.sum();
      out.loss = -lp.sums.sum() / tokens.clamp_min(1);
      out.tokens = b.tokens;
      out.metrics["nll"] = out.loss;
    } else if (o_.objective() == aln::v1::CONTRASTIVE) {
      PairForward f = pair_forward(batch, ctx);
      out = pair_loss_output(f, kernels::dpo_loss(f.logprobs, kernels::DpoLossType::kSigmoid, o_.beta(), 0));
    } else {
      out = rl_loss(batch, ctx);
    }
    if (!ctx.training && o_.eval_samples() > 0) measure_controllability(batch, ctx);
    return out;
  }

  // The rl objective's samples (on-policy), drawn by the engine's producer before each loss.
  RolloutPlan rollout_plan() const override {
    RolloutPlan plan;
    if (o_.objective() == aln::v1::CLM || o_.objective() == aln::v1::CONTRASTIVE) return plan;
    plan.group_size = o_.group_size();
    plan.generation = generation();
    return plan;
  }

  double normalizer(const std::vector<const buffer::Example*>& batch) const override {
    if (o_.objective() != aln::v1::CLM) return static_cast<double>(batch.size());
    int64_t tokens = 0;
    for (const auto* e : batch) tokens += static_cast<int64_t>(e->response.size());
    return static_cast<double>(std::max<int64_t>(tokens, 1));
  }

  // Rank correlations need every held-out prompt's measurements in one process.
  bool evaluation_splits() const override { return o_.eval_samples() == 0; }

  std::map<std::string, double> evaluation_summary() override {
    std::map<std::string, double> m;
    if (requested_[0].empty()) return m;
    std::vector<std::vector<double>> all_groups;
    for (int a = 0; a < 2; ++a) {
      m[absl::StrCat("spearman_", kAttributes[a])] = controllable::spearman(requested_[a], measured_[a]);
      m[absl::StrCat("ordered_pair_rate_", kAttributes[a])] = controllable::ordered_pair_rate(groups_[a]);
      m[absl::StrCat("level_match_", kAttributes[a])] = matches_[a] / static_cast<double>(requested_[a].size());
      all_groups.insert(all_groups.end(), groups_[a].begin(), groups_[a].end());
      requested_[a].clear();
      measured_[a].clear();
      groups_[a].clear();
      matches_[a] = 0;
    }
    m["ordered_pair_rate"] = controllable::ordered_pair_rate(all_groups);
    seen_.clear();
    return m;
  }

 private:
  // The attribute scores of rollouts: the reward model named after it, else its rule.
  std::array<std::vector<double>, 2> score(const RolloutBatch& r, const StepContext& ctx,
                                           const std::vector<const RewardModel*>& models) const {
    std::array<std::vector<double>, 2> out;
    for (int a = 0; a < 2; ++a) {
      StepContext c = ctx;
      c.reward_models.clear();
      aln::v1::RewardRule rule = rules_[a];
      if (model_index_[a] >= 0) {
        ALN_CHECK(static_cast<size_t>(model_index_[a]) < models.size(), "reward model \"", kAttributes[a],
                  "\" is not loaded");
        c.reward_models = {models[static_cast<size_t>(model_index_[a])]};
        rule = aln::v1::REWARD_RULE_UNSPECIFIED;
      }
      Metrics parts;
      at::Tensor t = score_rollouts(r, c, rule, o_.max_new_tokens(), &parts).to(at::kCPU).contiguous();
      out[static_cast<size_t>(a)].assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    }
    return out;
  }

  model::GenerationOptions generation() const {
    model::GenerationOptions gen;
    gen.max_new_tokens = o_.max_new_tokens();
    gen.temperature = o_.temperature();
    return gen;
  }

  // samples_per_prompt answers to every prompt (plain prompts, no control tokens), scored.
  std::vector<Sample> generate(const std::vector<buffer::Example>& prompts, const PrepareContext& pctx) const {
    ALN_CHECK(pctx.policy != nullptr, "the controllable method needs the policy to generate its data");
    StepContext ctx;
    ctx.policy = pctx.policy;
    ctx.pad_id = pctx.pad_id;
    ctx.eos_id = pctx.eos_id;
    ctx.decode = pctx.decode;
    ctx.seed = pctx.seed ^ (pctx.training_set ? 0x7472ULL : 0x6576ULL);
    std::vector<Sample> out;
    constexpr size_t kChunk = 16;
    for (size_t start = 0; start < prompts.size(); start += kChunk) {
      std::vector<const buffer::Example*> chunk;
      for (size_t i = start; i < std::min(prompts.size(), start + kChunk); ++i) chunk.push_back(&prompts[i]);
      ctx.step = static_cast<int64_t>(start / kChunk);
      RolloutBatch r = sample_rollouts(chunk, ctx, o_.samples_per_prompt(), generation());
      const auto scores = score(r, ctx, pctx.reward_models);
      for (size_t row = 0; row < r.completions.size(); ++row) {
        const auto* e = chunk[row / static_cast<size_t>(o_.samples_per_prompt())];
        Sample s;
        s.prompt = e->prompt_text.empty() ? pctx.decode(e->prompt) : e->prompt_text;
        s.source = e->source;
        s.completion = r.completions[row];
        s.score[0] = scores[0][row];
        s.score[1] = scores[1][row];
        out.push_back(std::move(s));
      }
    }
    return out;
  }

  static std::vector<const Sample*> all_by_prompt(const std::vector<Sample>& samples, const std::string& prompt) {
    std::vector<const Sample*> out;
    for (const auto& s : samples) {
      if (s.prompt == prompt) out.push_back(&s);
    }
    return out;
  }

  // The requested levels stated by a prompt's control tokens.
  std::array<int, 2> requested_levels(const std::vector<int64_t>& prompt) const {
    std::array<int, 2> r = {-1, -1};
    for (int64_t id : prompt) {
      for (int a = 0; a < 2; ++a) {
        auto it = std::find(control_ids_[a].begin(), control_ids_[a].end(), id);
        if (it != control_ids_[a].end()) r[static_cast<size_t>(a)] = static_cast<int>(it - control_ids_[a].begin());
      }
    }
    ALN_CHECK(r[0] >= 0 && r[1] >= 0, "a controllable prompt without its two control tokens");
    return r;
  }

  // A prompt with its control tokens replaced by the given levels.
  std::vector<int64_t> with_levels(std::vector<int64_t> prompt, int helpful, int harmless) const {
    for (auto& id : prompt) {
      for (int a = 0; a < 2; ++a) {
        if (std::find(control_ids_[a].begin(), control_ids_[a].end(), id) != control_ids_[a].end()) {
          id = control_ids_[a][static_cast<size_t>(a == 0 ? helpful : harmless)];
        }
      }
    }
    return prompt;
  }

  // GRPO with reward -(|measured - requested| summed over the two attributes), in levels.
  LossOutput rl_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) const {
    const int64_t g = o_.group_size();
    const RolloutBatch& r = take_rollouts(batch, ctx, rollout_plan(), "controllable");
    const auto scores = score(r, ctx, ctx.reward_models);
    std::vector<double> rewards;
    double match = 0;
    for (size_t row = 0; row < r.completions.size(); ++row) {
      const auto want = requested_levels(batch[row / static_cast<size_t>(g)]->prompt);
      double d = 0;
      for (int a = 0; a < 2; ++a) {
        d += std::abs(scales_[a].level(scores[static_cast<size_t>(a)][row]) - want[static_cast<size_t>(a)]);
      }
      rewards.push_back(-d);
      match += d == 0;
    }
    const at::Tensor reward = at::tensor(rewards, at::kDouble).to(ctx.policy->device());
    const at::Tensor adv = kernels::group_advantages(reward, g, true);
    RewardSources sources;
    for (int a = 0; a < 2; ++a) {
      sources[absl::StrCat(kAttributes[a], "_score")] =
          at::tensor(scores[static_cast<size_t>(a)], at::kDouble).to(ctx.policy->device());
    }
    publish_rollouts(r, batch, g, reward, sources, ctx);
    RolloutLossOptions lo;
    lo.temperature = o_.temperature();
    lo.epsilon_low = lo.epsilon_high = o_.epsilon();
    lo.beta = o_.rl_beta();
    kernels::GrpoLossOutput l = rollout_grpo_loss(r, ctx, adv, lo);
    LossOutput out;
    out.loss = l.loss;
    out.tokens = r.tokens;
    out.metrics["reward_mean"] = reward.mean();
    out.metrics["level_match"] = match / static_cast<double>(rewards.size());
    out.metrics["kl"] = l.kl;
    out.metrics["completion_length"] = r.lengths.to(at::kDouble).mean();
    out.metrics["policy_version"] = static_cast<double>(r.policy_version);
    return out;
  }

  // Held-out controllability: each new prompt of the batch is answered at every requested level of
  // one attribute (the other held at the middle level), and the measured scores are kept for
  // evaluation_summary.
  void measure_controllability(const std::vector<const buffer::Example*>& batch, StepContext& ctx) {
    const int levels = o_.levels(), mid = levels / 2;
    std::vector<buffer::Example> variants;
    std::vector<std::array<int, 2>> keys;  // (attribute, level)
    for (const auto* e : batch) {
      if (!seen_.insert(e->prompt_text.empty() ? e->source : e->prompt_text).second) continue;
      for (int a = 0; a < 2; ++a) {
        for (int k = 0; k < levels; ++k) {
          buffer::Example v;
          v.prompt = with_levels(e->prompt, a == 0 ? k : mid, a == 1 ? k : mid);
          variants.push_back(std::move(v));
          keys.push_back({a, k});
        }
      }
    }
    if (variants.empty()) return;
    std::vector<const buffer::Example*> ptrs;
    for (const auto& v : variants) ptrs.push_back(&v);
    StepContext c = ctx;
    c.step = 0;
    const int64_t g = o_.eval_samples();
    RolloutBatch r = sample_rollouts(ptrs, c, g, generation());
    const auto scores = score(r, c, ctx.reward_models);
    std::vector<double> group[2];
    for (size_t i = 0; i < variants.size(); ++i) {
      const int a = keys[i][0], k = keys[i][1];
      double mean = 0;
      for (int64_t j = 0; j < g; ++j) {
        const double s = scores[static_cast<size_t>(a)][i * static_cast<size_t>(g) + static_cast<size_t>(j)];
        requested_[a].push_back(k);
        measured_[a].push_back(s);
        matches_[a] += scales_[a].level(s) == k;
        mean += s / static_cast<double>(g);
      }
      group[a].push_back(mean);
      if (k == levels - 1) {
        groups_[a].push_back(group[a]);
        group[a].clear();
      }
    }
  }

  absl::StatusOr<std::vector<Sample>> read_samples(const std::string& path) const {
    std::ifstream in(path);
    std::vector<Sample> out;
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("completion") || !j.contains("scores")) {
        return absl::DataLossError(absl::StrCat(path, ":", n, ": malformed; delete the file to generate again"));
      }
      Sample s;
      s.prompt = j.value("prompt", "");
      s.source = j.value("source", "");
      s.completion = j["completion"].get<std::vector<int64_t>>();
      s.score[0] = j["scores"][0].get<double>();
      s.score[1] = j["scores"][1].get<double>();
      out.push_back(std::move(s));
    }
    return out;
  }

  absl::Status write_samples(const std::string& path, const std::vector<Sample>& samples) const {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    std::string text;
    for (const auto& s : samples) {
      nlohmann::json j = {{"prompt", s.prompt},
                          {"source", s.source},
                          {"completion", s.completion},
                          {"scores", {s.score[0], s.score[1]}}};
      text += j.dump() + "\n";
    }
    return io::write_text_atomically(path, text);
  }

  aln::v1::ControllableOptions o_;
  int model_index_[2] = {-1, -1};
  aln::v1::RewardRule rules_[2];
  std::vector<int64_t> control_ids_[2];
  LevelScale scales_[2];
  // Held-out controllability, accumulated over the evaluation's batches.
  std::set<std::string> seen_;
  std::vector<double> requested_[2], measured_[2];
  std::vector<std::vector<double>> groups_[2];
  double matches_[2] = {0, 0};
};

}  // namespace

std::unique_ptr<Trainer> make_controllable_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<ControllableTrainer>(stage);
}

absl::Status check_controllable_stage(const aln::v1::StageSpec& stage, const std::string& where) {
  const auto& c = stage.trainer().controllable();
  for (const auto& [attribute, rule] : {std::pair{"helpful", c.helpful_rule()}, {"harmless", c.harmless_rule()}}) {
    bool named = false;
    for (const auto& rm : stage.reward_models()) named = named || rm.name() == attribute;
    if (!named && rule == aln::v1::REWARD_RULE_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "trainer.controllable.", attribute, "_rule: no ", attribute,
                       " scorer; add a reward model named \"", attribute,
                       "\" to the stage's reward_models or set this rule (length, brevity, refusal)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace aln::trainers
