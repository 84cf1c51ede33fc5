#include "trainers/engine/evaluate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "kernels/token_logprobs.h"
#include "trainers/sequence_logprobs.h"

namespace aln::engine {

MetricMap evaluate(trainers::Trainer& trainer, const model::DecoderModel& policy, const model::DecoderModel* reference,
                   const std::vector<buffer::Example>& eval, int64_t micro, int64_t pad_id, bool with_loss,
                   const trainers::StepContext* extras, Pipeline* pipeline) {
  MetricMap out;
  if (eval.empty()) return out;
  at::NoGradGuard no_grad;
  const trainers::Needs needs = trainer.needs();
  const bool pairs = needs.records == trainers::RecordKind::kPreferencePairs;
  const bool lm_pairs = pairs && needs.head == trainers::ModelHead::kLanguageModel;
  double loss = 0, pref = 0, safe_total = 0, safe_right = 0;
  MetricMap sums;
  for (size_t start = 0; start < eval.size(); start += static_cast<size_t>(micro)) {
    std::vector<const buffer::Example*> batch;
    for (size_t i = start; i < std::min(eval.size(), start + static_cast<size_t>(micro)); ++i)
      batch.push_back(&eval[i]);
    const double weight = static_cast<double>(batch.size());
    at::Tensor seq_sums, seq_tokens;
    if (with_loss) {
      trainers::StepContext ctx = extras != nullptr ? *extras : trainers::StepContext{};
      ctx.policy = &policy;
      if (reference != nullptr) ctx.reference = std::make_shared<trainers::LocalReference>(*reference);
      ctx.pad_id = pad_id;
      ctx.step = 0;  // evaluation samples the same rollouts before and after a stage
      ctx.training = false;
      trainers::LossOutput step;
      // Pipeline stages: every stage runs the pass, the last one computes (and keeps) the numbers.
      if (pipeline != nullptr) {
        if (!pipeline->forward_only(policy, [&] { step = trainer.compute_loss(batch, ctx); })) continue;
      } else {
        step = trainer.compute_loss(batch, ctx);
      }
      loss += step.loss.item<double>() * weight;
      for (const auto& [k, v] : trainers::read_all(step.metrics)) sums[k] += v * weight;
      seq_sums = step.sequence_logprobs;
      seq_tokens = step.sequence_tokens;
    }
    if (!lm_pairs) continue;
    if (!seq_sums.defined()) {  // the trainer did not report them (or no loss was computed): score the pairs
      kernels::ResponseLogprobs lp = trainers::response_logprobs(policy, buffer::collate_pairs(batch, pad_id));
      seq_sums = lp.sums;
      seq_tokens = lp.tokens;
    }
    at::Tensor mean = (seq_sums / seq_tokens.clamp_min(1)).to(at::kDouble).contiguous();
    const double* m = mean.data_ptr<double>();
    const size_t n = batch.size();
    for (size_t i = 0; i < n; ++i) {
      const double margin = m[i] - m[n + i];
      pref += margin > 0;
      const auto* e = batch[i];
      if (e->unsafe_chosen >= 0 && e->unsafe_rejected >= 0 && e->unsafe_chosen != e->unsafe_rejected) {
        ++safe_total;
        safe_right += (e->unsafe_chosen == 0) == (margin > 0);
      }
    }
  }
  const double n = static_cast<double>(eval.size());
  if (with_loss) out["loss"] = loss / n;
  for (const auto& [k, v] : sums) out[k] = v / n;
  if (lm_pairs) {
    out["preference_accuracy"] = pref / n;
    if (safe_total > 0) {
      out["safe_vs_unsafe_accuracy"] = safe_right / safe_total;
      out["safe_vs_unsafe_pairs"] = safe_total;
    }
  }
  if (with_loss) {
    for (const auto& [k, v] : trainer.evaluation_summary()) out[k] = v;
  }
  // Per-batch counters make no sense averaged.
  out.erase("response_tokens");
  return pipeline != nullptr ? pipeline->share_from_last(out) : out;
}

}  // namespace aln::engine
