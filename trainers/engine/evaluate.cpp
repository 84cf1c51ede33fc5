#include "trainers/engine/evaluate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <set>
#include <string>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/token_logprobs.h"
#include "trainers/rollouts/producer.h"
#include "trainers/sequence_logprobs.h"

namespace aln::engine {
namespace {

// What one held-out batch adds to the evaluation: sums weighted by the batch's size, and counts.
struct BatchNumbers {
  double loss = 0, preferred = 0, safe_pairs = 0, safe_right = 0;
  MetricMap metrics;
};

struct EvalPlan {
  trainers::Trainer* trainer;
  const model::DecoderModel* policy;
  const model::DecoderModel* reference;
  int64_t pad_id;
  bool with_loss;
  bool lm_pairs;
  const trainers::StepContext* extras;
  Pipeline* pipeline;
};

// One batch's numbers; false on pipeline stages other than the last (they only pass activations on).
bool evaluate_batch(const EvalPlan& p, const std::vector<const buffer::Example*>& batch, BatchNumbers& out) {
  const double weight = static_cast<double>(batch.size());
  at::Tensor seq_sums, seq_tokens;
  if (p.with_loss) {
    trainers::StepContext ctx = p.extras != nullptr ? *p.extras : trainers::StepContext{};
    ctx.policy = p.policy;
    if (p.reference != nullptr) ctx.reference = std::make_shared<trainers::LocalReference>(*p.reference);
    ctx.pad_id = p.pad_id;
    ctx.step = 0;  // evaluation samples the same rollouts before and after a stage
    ctx.training = false;
    // A generating method's samples, on-policy: a producer of the trainer's plan without a snapshot.
    const trainers::RolloutPlan plan = p.trainer->rollout_plan();
    if (plan.group_size > 0) trainers::RolloutProducer(plan, nullptr, p.policy).produce(batch, ctx);
    trainers::LossOutput step;
    // Pipeline stages: every stage runs the pass, the last one computes (and keeps) the numbers.
    if (p.pipeline != nullptr) {
      if (!p.pipeline->forward_only(*p.policy, [&] { step = p.trainer->compute_loss(batch, ctx); })) return false;
    } else {
      step = p.trainer->compute_loss(batch, ctx);
    }
    // Evaluation is outside the step path: one read per batch is fine here.
    out.loss = step.loss.item<double>() * weight;
    for (const auto& [k, v] : trainers::read_all(step.metrics)) out.metrics[k] = v * weight;
    seq_sums = step.sequence_logprobs;
    seq_tokens = step.sequence_tokens;
  }
  if (!p.lm_pairs) return true;
  if (!seq_sums.defined()) {  // the trainer did not report them (or no loss was computed): score the pairs
    kernels::ResponseLogprobs lp =
        trainers::response_logprobs(*p.policy, buffer::collate_pairs(batch, p.pad_id).to(p.policy->device()));
    seq_sums = lp.sums;
    seq_tokens = lp.tokens;
  }
  at::Tensor mean = (seq_sums / seq_tokens.clamp_min(1)).to(at::kDouble).cpu().contiguous();
  const double* m = mean.data_ptr<double>();
  const size_t n = batch.size();
  for (size_t i = 0; i < n; ++i) {
    const double margin = m[i] - m[n + i];
    out.preferred += margin > 0;
    const auto* e = batch[i];
    if (e->unsafe_chosen >= 0 && e->unsafe_rejected >= 0 && e->unsafe_chosen != e->unsafe_rejected) {
      ++out.safe_pairs;
      out.safe_right += (e->unsafe_chosen == 0) == (margin > 0);
    }
  }
  return true;
}

// The metric names any rank saw, on every rank (the ranks' batches may differ in what they report).
std::vector<std::string> all_metric_names(const DataParallel& ranks, const std::vector<BatchNumbers>& rows) {
  std::set<std::string> mine;
  for (const auto& row : rows)
    for (const auto& [k, v] : row.metrics) mine.insert(k);
  const std::string joined = absl::StrJoin(mine, "\n");
  const auto lengths = ranks.gather({static_cast<double>(joined.size())});
  const int64_t longest = static_cast<int64_t>(*std::max_element(lengths.begin(), lengths.end()));
  // The names as bytes, each rank's padded to the longest, gathered in one collective.
  at::Tensor bytes = at::zeros({std::max<int64_t>(longest, 1)}, at::kByte);
  std::copy(joined.begin(), joined.end(), bytes.data_ptr<uint8_t>());
  const at::Tensor everyone = ranks.all_gather(bytes).contiguous();
  const char* text = reinterpret_cast<const char*>(everyone.data_ptr<uint8_t>());
  std::set<std::string> names;
  for (size_t r = 0; r < lengths.size(); ++r) {
    const absl::string_view part(text + static_cast<int64_t>(r) * bytes.numel(), static_cast<size_t>(lengths[r]));
    for (absl::string_view name : absl::StrSplit(part, '\n', absl::SkipEmpty())) names.emplace(name);
  }
  return {names.begin(), names.end()};
}

// Every batch's numbers on every rank: each rank fills the rows it evaluated, the others are zeros,
// and a sum over ranks puts each row together exactly (x + 0 = x).
void share_rows(const DataParallel& ranks, std::vector<BatchNumbers>& rows) {
  const std::vector<std::string> names = all_metric_names(ranks, rows);
  const int64_t width = 4 + static_cast<int64_t>(names.size());
  at::Tensor table = at::zeros({static_cast<int64_t>(rows.size()), width}, at::kDouble);
  double* t = table.data_ptr<double>();
  for (size_t b = 0; b < rows.size(); ++b) {
    double* row = t + b * static_cast<size_t>(width);
    row[0] = rows[b].loss, row[1] = rows[b].preferred, row[2] = rows[b].safe_pairs, row[3] = rows[b].safe_right;
    for (size_t k = 0; k < names.size(); ++k) {
      auto it = rows[b].metrics.find(names[k]);
      if (it != rows[b].metrics.end()) row[4 + k] = it->second;
    }
  }
  ranks.sum(table);
  t = table.data_ptr<double>();
  for (size_t b = 0; b < rows.size(); ++b) {
    const double* row = t + b * static_cast<size_t>(width);
    rows[b] = BatchNumbers{row[0], row[1], row[2], row[3], {}};
    for (size_t k = 0; k < names.size(); ++k) rows[b].metrics[names[k]] = row[4 + k];
  }
}

}  // namespace

MetricMap evaluate(trainers::Trainer& trainer, const model::DecoderModel& policy, const model::DecoderModel* reference,
                   const std::vector<buffer::Example>& eval, int64_t micro, int64_t pad_id, bool with_loss,
                   const trainers::StepContext* extras, Pipeline* pipeline, const DataParallel* ranks) {
  MetricMap out;
  if (eval.empty()) return out;
  at::NoGradGuard no_grad;
  const trainers::Needs needs = trainer.needs();
  const bool pairs = needs.records == trainers::RecordKind::kPreferencePairs;
  const bool lm_pairs = pairs && needs.head == trainers::ModelHead::kLanguageModel;
  const EvalPlan plan{&trainer, &policy, reference, pad_id, with_loss, lm_pairs, extras, pipeline};
  const bool split = ranks != nullptr && ranks->size() > 1 && trainer.evaluation_splits();
  const size_t step = static_cast<size_t>(micro);
  const size_t batches = (eval.size() + step - 1) / step;
  std::vector<BatchNumbers> rows(batches);
  for (size_t b = 0; b < batches; ++b) {
    if (split && static_cast<int>(b % static_cast<size_t>(ranks->size())) != ranks->rank()) continue;
    std::vector<const buffer::Example*> batch;
    for (size_t i = b * step; i < std::min(eval.size(), (b + 1) * step); ++i) batch.push_back(&eval[i]);
    if (!evaluate_batch(plan, batch, rows[b])) rows[b] = BatchNumbers{};
  }
  if (split) share_rows(*ranks, rows);
  // Added in batch order, as one process evaluating every batch does, so the numbers do not depend
  // on the number of ranks.
  double loss = 0, preferred = 0, safe_pairs = 0, safe_right = 0;
  MetricMap sums;
  for (const auto& row : rows) {
    loss += row.loss, preferred += row.preferred, safe_pairs += row.safe_pairs, safe_right += row.safe_right;
    for (const auto& [k, v] : row.metrics) sums[k] += v;
  }
  const double n = static_cast<double>(eval.size());
  if (with_loss) out["loss"] = loss / n;
  for (const auto& [k, v] : sums) out[k] = v / n;
  if (lm_pairs) {
    out["preference_accuracy"] = preferred / n;
    if (safe_pairs > 0) {
      out["safe_vs_unsafe_accuracy"] = safe_right / safe_pairs;
      out["safe_vs_unsafe_pairs"] = safe_pairs;
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
