#include "trainers/ptalign/ptalign_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "kernels/unlikelihood.h"
#include "trainers/ptalign/self_generation.h"
#include "trainers/ptalign/token_weights.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {
namespace {

class PtAlignTrainer final : public Trainer {
 public:
  explicit PtAlignTrainer(const aln::v1::PtAlignOptions& o) : o_(o) {}
  std::string name() const override { return "ptalign"; }
  Needs needs() const override { return {RecordKind::kPreferencePairs, ModelHead::kLanguageModel, {}}; }

  absl::Status prepare(PrepareContext& ctx) override {
    if (o_.reward_filter() && ctx.training_set && ctx.reward_models.empty()) {
      return absl::InvalidArgumentError(
          "trainer.ptalign.reward_filter: needs a reward model; list one under the stage's reward_models");
    }
    std::vector<std::vector<int64_t>> lexicon;
    if (o_.token_weights() == aln::v1::LEXICON) {
      if (o_.lexicon_path().empty()) {
        return absl::InvalidArgumentError("trainer.ptalign.lexicon_path: token_weights: lexicon needs a lexicon file");
      }
      if (!ctx.encode_text) return absl::FailedPreconditionError("the lexicon needs the tokenizer");
      auto loaded = load_lexicon(o_.lexicon_path(), ctx.encode_text);
      if (!loaded.ok()) return loaded.status();
      lexicon = std::move(*loaded);
    }
    auto& examples = *ctx.examples;
    if (ctx.training_set && o_.num_instructions() > 0) {
      const std::string path = (std::filesystem::path(ctx.work_dir) / "ptalign_pairs.jsonl").string();
      absl::StatusOr<std::vector<buffer::Example>> generated =
          ctx.resuming ? read_generated_pairs(path) : self_generate_pairs(examples, ctx, o_, ctx.counters);
      if (!generated.ok()) return generated.status();
      (*ctx.counters)["seed_pairs"] = static_cast<double>(examples.size());
      (*ctx.counters)["generated_pairs"] = static_cast<double>(generated->size());
      double dropped = 0;
      for (auto& e : *generated) {
        if (o_.reward_filter() && reward_margin(e, ctx) < o_.min_reward_margin()) {
          ++dropped;
          continue;
        }
        examples.push_back(std::move(e));
      }
      if (o_.reward_filter()) (*ctx.counters)["dropped_reward_margin"] = dropped;
    }
    double weighted = 0, tokens = 0, with_spans = 0;
    if (o_.token_weights() == aln::v1::SPANS && !ctx.decode) {
      return absl::FailedPreconditionError("span weights need the tokenizer");
    }
    for (auto& e : examples) {
      with_spans += !e.rejected_spans.empty();
      e.rejected_weights = o_.token_weights() == aln::v1::SPANS
                               ? span_token_weights(e, ctx.decode, ctx.eos_id)
                               : toxic_token_weights(e, o_.token_weights(), lexicon, ctx.eos_id);
      for (float w : e.rejected_weights) weighted += w > 0;
      tokens += static_cast<double>(e.rejected.size());
    }
    (*ctx.counters)["toxic_tokens_weighted"] = weighted;
    (*ctx.counters)["toxic_tokens"] = tokens;
    if (o_.token_weights() == aln::v1::SPANS) (*ctx.counters)["pairs_with_spans"] = with_spans;
    return absl::OkStatus();
  }

  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    const int64_t n = static_cast<int64_t>(batch.size());
    const buffer::SequenceBatch host = buffer::collate_pairs(batch, ctx.pad_id);
    const int64_t t = host.input_ids.size(1);
    // The toxic weights laid out like the per-token log-probs, on the host from the host layout:
    // the k-th response token of a rejected row gets rejected_weights[k].
    at::Tensor host_rejected = host.response_mask.narrow(1, 1, t - 1).narrow(0, n, n).to(at::kLong).contiguous();
    at::Tensor host_weights = at::zeros({n, t - 1}, at::kFloat);
    {
      auto m = host_rejected.accessor<int64_t, 2>();
      auto wt = host_weights.accessor<float, 2>();
      for (int64_t i = 0; i < n; ++i) {
        const auto& w = batch[static_cast<size_t>(i)]->rejected_weights;
        size_t k = 0;
        for (int64_t c = 0; c < t - 1; ++c) {
          if (m[i][c] > 0) {
            if (k < w.size()) wt[i][c] = static_cast<float>(w[k]);
            ++k;
          }
        }
      }
    }
    const buffer::SequenceBatch b = host.to(ctx.policy->device());
    kernels::ResponseLogprobs lp = response_logprobs(*ctx.policy, b);
    const at::Tensor mask = b.response_mask.narrow(1, 1, t - 1);  // column c scores token c + 1
    const at::Tensor rejected_mask = host_rejected.to(b.input_ids.device());
    const at::Tensor weights = host_weights.to(lp.per_token.options());
    kernels::UnlikelihoodOutput l =
        kernels::unlikelihood_loss(lp.per_token.narrow(0, 0, n), mask.narrow(0, 0, n), lp.per_token.narrow(0, n, n),
                                   rejected_mask, weights, o_.lambda());
    LossOutput out;
    out.loss = l.loss;
    out.tokens = b.tokens;
    out.metrics["likelihood_loss"] = l.likelihood;
    out.metrics["unlikelihood_loss"] = l.unlikelihood;
    // In float64, as the host computed it: the share is 0 when both terms are.
    const at::Tensor likelihood = l.likelihood.to(at::kDouble), unlikelihood = l.unlikelihood.to(at::kDouble);
    const at::Tensor total = likelihood + o_.lambda() * unlikelihood;
    out.metrics["unlikelihood_share"] =
        at::where(total != 0, o_.lambda() * unlikelihood / total, at::zeros_like(total));
    out.metrics["weighted_token_share"] = l.weighted_share;
    out.metrics["toxic_token_probability"] = l.toxic_probability;
    out.sequence_logprobs = lp.sums.detach();
    out.sequence_tokens = lp.tokens.detach();
    return out;
  }

 private:
  // r(x, y+) - r(x, y-) by the stage's first reward model.
  static double reward_margin(const buffer::Example& e, const PrepareContext& ctx) {
    at::NoGradGuard no_grad;
    const buffer::Example* one[] = {&e};
    buffer::SequenceBatch b = buffer::collate_pairs({one[0]}, ctx.pad_id);
    at::Tensor s = ctx.reward_models.front()->scores(b.input_ids, b.attention_mask).select(1, 0);
    return (s[0] - s[1]).item<double>();
  }

  aln::v1::PtAlignOptions o_;
};

}  // namespace

std::unique_ptr<Trainer> make_ptalign_trainer(const aln::v1::StageSpec& stage) {
  return std::make_unique<PtAlignTrainer>(stage.trainer().ptalign());
}

}  // namespace aln::trainers
