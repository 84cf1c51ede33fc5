#include "trainers/hair/hair_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/model/hf_checkpoint.h"
#include "kernels/grpo_loss.h"
#include "kernels/hair.h"
#include "trainers/hair/demonstrations.h"
#include "trainers/hair/shadow_rewards.h"
#include "trainers/rollouts/rollout.h"
#include "trainers/sentence_embeddings.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {
namespace {

using hair::ShadowRewards;

// Rows of `ids`/`mask` scored by one shadow model ([rows] float32, differentiable when its
// tensors require grad).
at::Tensor score(const model::DecoderModel& m, const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& rows) {
  const at::Tensor r = rows.to(ids.device());  // row lists are made on the host
  return m.scores(ids.index_select(0, r), mask.index_select(0, r)).select(1, 0);
}

// Row blocks [r_i, w_i] stacked into one [sum r_i, max w_i], each padded on the right with `value`
// (a score is read at each row's last real token, wherever the padding is).
at::Tensor right_padded(const std::vector<at::Tensor>& blocks, int64_t value) {
  int64_t width = 0;
  for (const at::Tensor& b : blocks) width = std::max(width, b.size(1));
  std::vector<at::Tensor> padded;
  padded.reserve(blocks.size());
  for (const at::Tensor& b : blocks) padded.push_back(at::constant_pad_nd(b, {0, width - b.size(1)}, value));
  return at::cat(padded);
}

// What a training micro-batch leaves for the shadow-reward update that follows the policy step.
struct PendingIrl {
  at::Tensor sample_ids, sample_mask;  // [P*G, T] prompt + completion
  at::Tensor demo_ids, demo_mask;      // [P, T'] prompt + demonstration
  std::vector<size_t> prompt_model;    // shadow model of each prompt
};

class HairTrainer final : public Trainer {
 public:
  explicit HairTrainer(const aln::v1::HairOptions& o) : o_(o) {}
  std::string name() const override { return "hair"; }
  Needs needs() const override {
    // The reference serves the KL term (beta > 0) and, by default, is the sentence encoder (frozen, and
    // saved with checkpoints, so hardness is the same after a resume). With an encoder of its own and
    // beta 0 nothing uses it, so it is not loaded (and with placement: separate gets no ranks).
    const bool reference = o_.beta() > 0 || o_.encoder().empty();
    Needs n{RecordKind::kPrompts, ModelHead::kLanguageModel, {}};
    if (!reference) return n;
    // The reference scores the rollouts for the KL term and, without a sentence encoder of its own
    // (trainer.hair.encoder), embeds sentences: its own ranks can do both each step (placement:
    // separate).
    n.reference.push_back(ReferenceQuery::kTokenLogprobs);
    if (o_.encoder().empty()) n.reference.push_back(ReferenceQuery::kSentenceEmbeddings);
    return n;
  }

  absl::Status prepare(PrepareContext& ctx) override {
    auto& examples = *ctx.examples;
    if (ctx.training_set) {
      (*ctx.counters)["hair_dropped_for_balance"] =
          static_cast<double>(hair::balance_categories(examples, o_.per_category(), ctx.seed ^ 0x68616972ULL));
    }
    if (!o_.demonstrations().empty() && !demonstrations_) {
      auto read = hair::read_demonstrations(o_.demonstrations());
      if (!read.ok()) return read.status();
      demonstrations_ = std::move(*read);
    }
    const std::string tmpl =
        o_.demonstration_template().empty() ? hair::kDefaultDemonstrationTemplate : o_.demonstration_template();
    const int64_t max_response = ctx.stage->data().max_response_length();
    double from_file = 0;
    for (auto& e : examples) {
      const std::string prompt = e.prompt_text.empty() ? ctx.decode(e.prompt) : e.prompt_text;
      std::string demo;
      if (demonstrations_) {
        auto it = demonstrations_->find(prompt);
        if (it != demonstrations_->end()) {
          demo = it->second;
          ++from_file;
        }
      }
      if (demo.empty()) demo = hair::render_demonstration(tmpl, prompt, hair::category_of(e));
      if (hair::split_sentences(demo).empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(e.source, ": the demonstration has no sentence to compare samples with (\"",
                         demo.substr(0, 60), "\"); check trainer.hair.demonstrations / demonstration_template"));
      }
      e.response = ctx.encode_response(demo);
      if (max_response > 0 && static_cast<int64_t>(e.response.size()) > max_response) {
        e.response.resize(static_cast<size_t>(max_response));
      }
      categories_.insert(hair::category_of(e));
    }
    if (ctx.training_set) {
      (*ctx.counters)["hair_demonstrations_from_file"] = from_file;
      std::map<std::string, double> per;
      for (const auto& e : examples) per[hair::metric_suffix(hair::category_of(e))] += 1;
      for (const auto& [c, n] : per) (*ctx.counters)[absl::StrCat("hair_category_", c)] = n;
    }
    if (!o_.encoder().empty() && !encoder_) {
      auto loaded = model::load_hf_model(o_.encoder());
      if (!loaded.ok())
        return absl::InvalidArgumentError(absl::StrCat("trainer.hair.encoder: ", loaded.status().message()));
      encoder_ = loaded->to(ctx.policy != nullptr ? ctx.policy->device() : at::Device(at::kCPU), at::kFloat);
    }
    // The category list is known once both sets are prepared; rebuilt when the held-out set adds one.
    std::vector<std::string> cats(categories_.begin(), categories_.end());
    if (!shadows_ || shadows_->categories() != cats) {
      const model::DecoderModel* base = ctx.policy;
      std::optional<model::DecoderModel> init;
      if (!o_.shadow_init().empty()) {
        auto loaded = model::load_hf_model(o_.shadow_init());
        if (!loaded.ok()) {
          return absl::InvalidArgumentError(absl::StrCat("trainer.hair.shadow_init: ", loaded.status().message()));
        }
        // On the policy's device, as every model of the job.
        init = loaded->to(ctx.policy != nullptr ? ctx.policy->device() : at::Device(at::kCPU), at::kFloat);
        base = &*init;
      } else if (ctx.whole_policy) {  // a fully sharded policy: its tensors put together
        init = ctx.whole_policy();
        base = &*init;
      }
      ALN_CHECK(base != nullptr, "HAIR needs the policy to start its shadow reward models from");
      shadows_.emplace(cats, *base, o_.shared_reward_model(), o_.irl_lr(), ctx.learned_models);
    }
    return absl::OkStatus();
  }

  // On-policy samples, which the engine's producer draws before each step's loss.
  RolloutPlan rollout_plan() const override {
    return sampling_plan(o_.group_size(), o_.max_new_tokens(), o_.temperature(), o_.top_k(), o_.top_p());
  }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    ALN_CHECK(shadows_.has_value(), "HAIR was not prepared (no shadow reward models)");
    const int64_t g = o_.group_size();
    const int64_t p = static_cast<int64_t>(batch.size());
    const RolloutBatch& rollouts = take_rollouts(batch, ctx, rollout_plan(), "hair");

    std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>> demo_rows;
    std::vector<size_t> prompt_model, prompt_category;
    for (const auto* e : batch) {
      demo_rows.emplace_back(&e->prompt, &e->response);
      const std::string c = hair::category_of(*e);
      prompt_model.push_back(shadows_->model_of(c));
      prompt_category.push_back(index_of(c));
    }
    const buffer::SequenceBatch demos = buffer::collate(demo_rows, ctx.pad_id).to(ctx.policy->device());

    // Shadow rewards of the samples and of the demonstrations, each by its category's model.
    const at::TensorOptions on_device = demos.input_ids.options().dtype(at::kDouble);
    at::Tensor sample_reward = at::zeros({p * g}, on_device);
    at::Tensor demo_reward = at::zeros({p}, on_device);
    {
      at::NoGradGuard no_grad;
      for (size_t m = 0; m < shadows_->num_models(); ++m) {
        std::vector<int64_t> prompts, rows;
        for (int64_t i = 0; i < p; ++i) {
          if (prompt_model[static_cast<size_t>(i)] != m) continue;
          prompts.push_back(i);
          for (int64_t j = 0; j < g; ++j) rows.push_back(i * g + j);
        }
        if (prompts.empty()) {
          // A sharded model's passes are collective: the same two here, on a row whose score is unused.
          // (Evaluation beside a fully sharded policy is not split: every rank has the same prompts.)
          if (shadows_->collective() && ctx.training) {
            const at::Tensor any = at::zeros({1}, at::kLong);
            score(shadows_->model(m), rollouts.sequences.input_ids, rollouts.sequences.attention_mask, any);
            score(shadows_->model(m), demos.input_ids, demos.attention_mask, any);
          }
          continue;
        }
        const at::Tensor pi = at::tensor(prompts, at::kLong).to(on_device.device());
        const at::Tensor ri = at::tensor(rows, at::kLong).to(on_device.device());
        const auto& s = rollouts.sequences;
        sample_reward.index_copy_(0, ri, score(shadows_->model(m), s.input_ids, s.attention_mask, ri).to(at::kDouble));
        demo_reward.index_copy_(0, pi,
                                score(shadows_->model(m), demos.input_ids, demos.attention_mask, pi).to(at::kDouble));
      }
    }
    Metrics parts;
    RewardSources sources{{"shadow", sample_reward}};
    at::Tensor rewards = sample_reward.clone();
    if (o_.reward_rule() != aln::v1::REWARD_RULE_UNSPECIFIED) {
      StepContext rule_ctx = ctx;
      rule_ctx.reward_models.clear();
      rewards += score_rollouts(rollouts, rule_ctx, o_.reward_rule(), o_.max_new_tokens(), &parts, &sources);
    }
    publish_rollouts(rollouts, batch, g, rewards, sources, ctx);

    LossOutput out;
    at::Tensor advantages;
    if (o_.hardness()) {
      const at::Tensor delta = data_hardness(batch, rollouts, ctx, g);
      const at::Tensor alpha_d = kernels::hair_data_alpha(delta, g);
      const at::Tensor gaps = sample_reward - demo_reward.repeat_interleave(g);
      const kernels::HairResponsiveness resp = kernels::hair_model_alpha(gaps, g, o_.tau());
      advantages = kernels::hair_advantages(rewards, alpha_d, resp.alpha, g);
      out.metrics["similarity_mean"] = (1 - delta).mean();
      out.metrics["alpha_d_mean"] = alpha_d.mean();
      out.metrics["alpha_d_min"] = alpha_d.min();
      out.metrics["alpha_d_max"] = alpha_d.max();
      out.metrics["alpha_m_mean"] = resp.alpha.mean();
      out.metrics["outlier_share"] = 1 - resp.kept.mean().to(at::kDouble);
      out.metrics["reward_gap_mean"] = gaps.mean();
    } else {
      advantages = kernels::group_advantages(rewards, g, true);
    }

    RolloutLossOptions lo;
    lo.temperature = o_.temperature();
    lo.epsilon_low = lo.epsilon_high = o_.epsilon();
    lo.beta = o_.beta();
    lo.token_mean = o_.normalization() == aln::v1::TOKEN_MEAN;
    kernels::GrpoLossOutput l = rollout_grpo_loss(rollouts, ctx, advantages, lo);
    out.loss = l.loss;
    out.tokens = rollouts.tokens;
    for (const auto& [k, v] : parts) out.metrics[k] = v;
    out.metrics["reward_mean"] = rewards.mean();
    out.metrics["reward_std"] = rewards.view({-1, g}).std(1).mean();
    out.metrics["shadow_reward_mean"] = sample_reward.mean();
    out.metrics["demo_reward_mean"] = demo_reward.mean();
    out.metrics["completion_length"] = rollouts.lengths.to(at::kDouble).mean();
    out.metrics["advantage_abs_mean"] = advantages.abs().mean();
    out.metrics["kl"] = l.kl;
    out.metrics["clip_ratio_low"] = l.clip_low;
    out.metrics["clip_ratio_high"] = l.clip_high;
    out.metrics["policy_version"] = static_cast<double>(rollouts.policy_version);

    if (ctx.training) {
      pending_.push_back({rollouts.sequences.input_ids, rollouts.sequences.attention_mask, demos.input_ids,
                          demos.attention_mask, prompt_model});
      if (!category_sums_.defined())
        category_sums_ = at::zeros({2 * static_cast<int64_t>(categories_.size())}, sample_reward.options());
      const int64_t nc = static_cast<int64_t>(categories_.size());
      for (int64_t i = 0; i < p; ++i) {
        const int64_t c = static_cast<int64_t>(prompt_category[static_cast<size_t>(i)]);
        category_sums_[c] += sample_reward.narrow(0, i * g, g).sum();
        category_sums_[nc + c] += static_cast<double>(g);
      }
    }
    return out;
  }

  std::map<std::string, double> after_step(StepContext& ctx) override {
    std::map<std::string, double> metrics;
    if (pending_.empty()) return metrics;
    const size_t nm = shadows_->num_models();
    const int64_t nc = static_cast<int64_t>(categories_.size());
    // Global pair counts per model and reward sums per category, so every rank normalises the IRL
    // loss the same way and logs the same per-category numbers.
    at::Tensor stats = at::zeros({static_cast<int64_t>(nm) + 2 * nc}, at::kDouble);
    for (const auto& pi : pending_) {
      for (size_t m : pi.prompt_model) stats[static_cast<int64_t>(m)] += static_cast<double>(o_.group_size());
    }
    stats.narrow(0, static_cast<int64_t>(nm), 2 * nc).copy_(category_sums_);
    if (ctx.sum) ctx.sum(stats);
    const double* st = stats.data_ptr<double>();
    size_t c = 0;
    for (const auto& name : categories_) {
      const double count = st[nm + static_cast<size_t>(nc) + c];
      if (count > 0) metrics[absl::StrCat("reward/", hair::metric_suffix(name))] = st[nm + c] / count;
      ++c;
    }
    const int64_t g = o_.group_size();
    for (int k = 0; k < o_.irl_steps(); ++k) {
      at::Tensor irl = at::zeros({2 * static_cast<int64_t>(nm)}, at::kDouble);  // loss sums, demo-wins
      for (size_t m = 0; m < nm; ++m) {
        const double global = st[m];
        if (global == 0) continue;
        model::DecoderModel& model = shadows_->model(m);
        model.set_requires_grad(true);
        for (const auto& pi : pending_) {
          std::vector<int64_t> prompts, rows;
          for (size_t i = 0; i < pi.prompt_model.size(); ++i) {
            if (pi.prompt_model[i] != m) continue;
            prompts.push_back(static_cast<int64_t>(i));
            for (int64_t j = 0; j < g; ++j) rows.push_back(static_cast<int64_t>(i) * g + j);
          }
          if (prompts.empty()) {
            // A sharded model's passes (and backward's reduce-scatters) are collective: the same pass
            // on one row, with no gradient from it.
            if (shadows_->collective()) {
              (score(model, pi.demo_ids, pi.demo_mask, at::zeros({1}, at::kLong)).sum() * 0.0).backward();
            }
            continue;
          }
          // The micro-batch's demonstrations and samples of this model's prompts in one pass: one
          // backward per micro-batch, as whole models accumulate it, so a sharded model's
          // reduce-scatter adds what their all-reduce adds, in the same order (the same bits).
          const at::Tensor p = at::tensor(prompts, at::kLong).to(pi.demo_ids.device());
          const at::Tensor r = at::tensor(rows, at::kLong).to(pi.sample_ids.device());
          const at::Tensor scores =
              model
                  .scores(right_padded({pi.demo_ids.index_select(0, p), pi.sample_ids.index_select(0, r)}, 0),
                          right_padded({pi.demo_mask.index_select(0, p), pi.sample_mask.index_select(0, r)}, 0))
                  .select(1, 0);
          const auto demos = static_cast<int64_t>(prompts.size());
          const at::Tensor demo = scores.narrow(0, 0, demos);
          const at::Tensor sample = scores.narrow(0, demos, scores.size(0) - demos);
          const at::Tensor diff = demo.repeat_interleave(g) - sample;
          const at::Tensor losses = at::softplus(-diff);  // -log sigmoid(r_demo - r_sample)
          (losses.sum() / global).backward();
          // (Sums kept on the host for the MPI sum below; after_step runs outside the step.)
          irl[static_cast<int64_t>(m)] += losses.detach().sum().to(at::kDouble).cpu();
          irl[static_cast<int64_t>(nm + m)] += diff.detach().gt(0).sum().to(at::kDouble).cpu();
        }
        shadows_->step(m, ctx.sum_gradients);
        model.set_requires_grad(false);
      }
      if (k == 0) {
        if (ctx.sum) ctx.sum(irl);
        double pairs = 0, loss = 0, wins = 0;
        for (size_t m = 0; m < nm; ++m) {
          pairs += st[m];
          loss += irl[static_cast<int64_t>(m)].item<double>();
          wins += irl[static_cast<int64_t>(nm + m)].item<double>();
        }
        metrics["irl_loss"] = pairs > 0 ? loss / pairs : 0;
        metrics["irl_accuracy"] = pairs > 0 ? wins / pairs : 0;
      }
    }
    pending_.clear();
    category_sums_ = at::Tensor();
    return metrics;
  }

  // Sharded shadow models are put together on rank 0 (collective) for save_state and finish.
  void before_save() override {
    if (shadows_) shadows_->gather();
  }
  absl::Status save_state(const std::string& dir) const override { return shadows_->save(dir); }
  absl::Status load_state(const std::string& dir) override { return shadows_->load(dir); }
  absl::Status finish(const std::string& work_dir) const override {
    return shadows_->export_models((std::filesystem::path(work_dir) / "shadow_rewards").string());
  }

 private:
  size_t index_of(const std::string& category) const {
    return static_cast<size_t>(std::distance(categories_.begin(), categories_.find(category)));
  }

  // delta_i = 1 - W_i of each sample against its prompt's demonstration (sentence embeddings).
  at::Tensor data_hardness(const std::vector<const buffer::Example*>& batch, const RolloutBatch& rollouts,
                           const StepContext& ctx, int64_t g) {
    ALN_CHECK(static_cast<bool>(ctx.decode) && static_cast<bool>(ctx.encode_text),
              "HAIR's data hardness needs the tokenizer in the step context");
    // The encoder of its own, else the reference (here or on its own ranks).
    ALN_CHECK(encoder_ || ctx.reference != nullptr,
              "HAIR's sentence encoder is missing (no reference model and no trainer.hair.encoder)");
    auto embed = [&](const std::vector<std::vector<int64_t>>& sentences) {
      return encoder_ ? mean_pooled_embeddings(*encoder_, sentences, ctx.pad_id)
                      : ctx.reference->sentence_embeddings(sentences, ctx.pad_id);
    };
    auto sentence_ids = [&](const std::string& text) {
      std::vector<std::vector<int64_t>> out;
      for (const auto& s : hair::split_sentences(text)) {
        auto ids = ctx.encode_text(s);
        if (!ids.empty()) out.push_back(std::move(ids));
      }
      return out;
    };
    // Demonstrations are embedded once: the encoder is frozen for the whole stage.
    std::vector<at::Tensor> demo_embeddings;
    for (const auto* e : batch) {
      auto it = demo_cache_.find(e->source);
      if (it == demo_cache_.end()) {
        std::vector<int64_t> ids = e->response;
        if (!ids.empty() && ids.back() == ctx.eos_id) ids.pop_back();
        auto sentences = sentence_ids(ctx.decode(ids));
        ALN_CHECK(!sentences.empty(), e->source, ": the demonstration has no sentence after truncation");
        it = demo_cache_.emplace(e->source, embed(sentences)).first;
      }
      demo_embeddings.push_back(it->second);
    }
    std::vector<std::vector<int64_t>> all;
    std::vector<std::pair<int64_t, int64_t>> spans;
    for (const auto& c : rollouts.completions) {
      auto s = sentence_ids(ctx.decode(c));
      spans.emplace_back(static_cast<int64_t>(all.size()), static_cast<int64_t>(s.size()));
      for (auto& ids : s) all.push_back(std::move(ids));
    }
    if (spans.empty()) return at::empty({0}, at::TensorOptions().dtype(at::kDouble).device(ctx.policy->device()));
    const at::Tensor& any_demo = demo_embeddings.front();
    const at::Tensor emb = all.empty() ? any_demo.new_zeros({0, any_demo.size(1)}) : embed(all);
    // One similarity per sample, stacked on the device: no host read per sample.
    std::vector<at::Tensor> similarity;
    similarity.reserve(spans.size());
    for (size_t r = 0; r < spans.size(); ++r) {
      const at::Tensor out = emb.narrow(0, spans[r].first, spans[r].second);
      similarity.push_back(kernels::hair_similarity(out, demo_embeddings[r / static_cast<size_t>(g)]));
    }
    return (1.0 - at::stack(similarity)).to(ctx.policy->device());
  }

  aln::v1::HairOptions o_;
  std::set<std::string> categories_;
  std::optional<std::map<std::string, std::string>> demonstrations_;
  std::optional<ShadowRewards> shadows_;
  std::optional<model::DecoderModel> encoder_;
  std::map<std::string, at::Tensor> demo_cache_;
  std::vector<PendingIrl> pending_;
  at::Tensor category_sums_;  // [2 * categories]: sample-reward sums, then sample counts, this step
};

}  // namespace

std::unique_ptr<Trainer> make_hair_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<HairTrainer>(stage.trainer().hair());
}

}  // namespace aln::trainers
