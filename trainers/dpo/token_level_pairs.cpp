#include "trainers/dpo/token_level_pairs.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/error.h"

namespace aln::trainers {

LossOutput token_level_pair_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx,
                                 const TokenLevelSettings& s) {
  ALN_CHECK(ctx.reference != nullptr, "TDPO and Ra-DPO need the reference model itself (full distributions)");
  const int64_t pairs = static_cast<int64_t>(batch.size());
  buffer::SequenceBatch b = buffer::collate_pairs(batch, ctx.pad_id).to(ctx.policy->device());
  const int64_t t = b.input_ids.size(1);
  ALN_CHECK(t >= 2, "sequences need at least two tokens to score a response");
  // Position p predicts token p + 1: the positions whose next token is a response token.
  const at::Tensor scored = b.response_mask.narrow(1, 1, t - 1).reshape(-1) > 0;
  const at::Tensor flat = b.scored.defined() ? b.scored : scored.nonzero().squeeze(1);  // laid out on the host
  const int64_t n = flat.numel();
  ALN_CHECK(n > 0, "no response tokens in the batch");
  const at::Tensor rows = at::div(flat, t - 1, "floor");
  const at::Tensor targets = b.input_ids.narrow(1, 1, t - 1).reshape(-1).index_select(0, flat);

  const bool training = at::GradMode::is_enabled();
  const at::Tensor hidden = ctx.policy->hidden_states(b.input_ids, b.attention_mask, nullptr, b.right_padded);
  const int64_t h = hidden.size(2);
  const at::Tensor selected = hidden.narrow(1, 0, t - 1).reshape({-1, h}).index_select(0, flat);  // [N, H]
  // Only the scored positions' hidden states (all that travels when the reference has ranks of its own).
  const at::Tensor ref_selected = ctx.reference->hidden_states(b.input_ids, b.attention_mask, flat);
  const at::Tensor weight = ctx.policy->output_weight();  // [V, H], the parameter (tied or not)
  const at::Tensor ref_weight = ctx.reference->output_weight();
  // Mixed precision: the chunks' logits, log-softmax and gradients in float32 whatever the compute
  // dtype (no-ops in float32).
  const at::Tensor sel_detached = selected.detach().to(at::kFloat);
  const at::Tensor weight_f = weight.detach().to(at::kFloat);
  const at::Tensor ref_selected_f = ref_selected.to(at::kFloat);
  const at::Tensor ref_weight_f = ref_weight.to(at::kFloat);
  auto chunk_logits = [&](int64_t start, int64_t len) {
    at::NoGradGuard no_grad;
    return std::pair{at::linear(sel_detached.narrow(0, start, len), weight_f),
                     at::linear(ref_selected_f.narrow(0, start, len), ref_weight_f)};
  };

  // Pass 1: per-sequence sums of log pi(y), log pi_ref(y) and the divergence terms.
  const auto opts = sel_detached.options();
  at::Tensor sums_policy = at::zeros({2 * pairs}, opts);
  at::Tensor sums_reference = at::zeros({2 * pairs}, opts);
  at::Tensor sums_divergence = at::zeros({2 * pairs}, opts);
  for (int64_t start = 0; start < n; start += s.chunk) {
    const int64_t len = std::min(s.chunk, n - start);
    auto [z, r] = chunk_logits(start, len);
    kernels::PositionTerms terms = kernels::position_terms(z, r, targets.narrow(0, start, len), s.divergence);
    const at::Tensor row = rows.narrow(0, start, len);
    sums_policy.index_add_(0, row, terms.policy_logp);
    sums_reference.index_add_(0, row, terms.reference_logp);
    sums_divergence.index_add_(0, row, terms.divergence);
  }
  kernels::TokenLevelCoefficients k = kernels::tdpo_family_coefficients(sums_policy, sums_reference, sums_divergence,
                                                                        pairs, s.variant, s.beta, s.alpha);

  LossOutput out;
  out.loss = k.loss.loss;
  if (training) {
    // Pass 2: dL/dz per chunk, contracted into dL/dh [N, H] and dL/dW [V, H].
    at::Tensor grad_hidden = at::empty({n, h}, opts);
    at::Tensor grad_weight = at::zeros(weight.sizes(), opts);
    {
      at::NoGradGuard no_grad;
      for (int64_t start = 0; start < n; start += s.chunk) {
        const int64_t len = std::min(s.chunk, n - start);
        auto [z, r] = chunk_logits(start, len);
        const at::Tensor row = rows.narrow(0, start, len);
        const at::Tensor g =
            kernels::position_terms_grad(z, r, targets.narrow(0, start, len), k.policy.index_select(0, row),
                                         k.divergence.index_select(0, row), s.divergence);
        grad_hidden.narrow(0, start, len).copy_(at::mm(g, weight_f));
        grad_weight.addmm_(g.t(), sel_detached.narrow(0, start, len));
      }
    }
    // d(surrogate)/d(selected) = grad_hidden and d/d(weight) = grad_weight; its value is replaced
    // by the loss's.
    // (In the weight's own dtype: no third float32 copy of a [V, H] matrix; the gradient through a
    // bfloat16 cast is rounded to it anyway.)
    const at::Tensor surrogate = (selected.to(at::kFloat) * grad_hidden).sum() +
                                 (weight * grad_weight.to(weight.scalar_type())).sum().to(at::kFloat);
    out.loss = surrogate - surrogate.detach() + k.loss.loss;
  }
  out.tokens = b.tokens;
  const auto& l = k.loss;
  out.metrics["rewards_chosen"] = l.rewards_chosen.mean();
  out.metrics["rewards_rejected"] = l.rewards_rejected.mean();
  out.metrics["rewards_accuracy"] = l.accuracy;
  out.metrics["rewards_margin"] = l.margin;
  const at::Tensor dw = sums_divergence.narrow(0, 0, pairs), dl = sums_divergence.narrow(0, pairs, pairs);
  out.metrics[s.metric_name + "_chosen"] = dw.mean();
  out.metrics[s.metric_name + "_rejected"] = dl.mean();
  out.metrics[s.metric_name + "_margin"] = (dl - dw).mean();
  const at::Tensor counts = scored.reshape({2 * pairs, t - 1}).sum(1).to(opts.dtype());
  const at::Tensor lr = (sums_policy - sums_reference).to(at::kDouble);
  out.metrics["logratio_chosen"] = lr.narrow(0, 0, pairs).mean();
  out.metrics["logratio_rejected"] = lr.narrow(0, pairs, pairs).mean();
  // The exact per-token KL(pi_ref || pi) is what TDPO's term is; for Ra-DPO report the log-ratio
  // estimate like the other pair trainers.
  out.metrics["kl_estimate"] = (lr / counts.to(at::kDouble).clamp_min(1)).mean();
  out.sequence_logprobs = sums_policy;
  out.sequence_tokens = counts;
  return out;
}

namespace {

class TokenLevelTrainer final : public Trainer {
 public:
  TokenLevelTrainer(std::string name, TokenLevelSettings settings)
      : name_(std::move(name)), settings_(std::move(settings)) {}
  std::string name() const override { return name_; }
  Needs needs() const override {
    // The full distributions are formed here from the reference's hidden states and head.
    return {RecordKind::kPreferencePairs, ModelHead::kLanguageModel, {ReferenceQuery::kHiddenStates}};
  }
  LossOutput compute_loss(const std::vector<const buffer::Example*>& batch, StepContext& ctx) override {
    return token_level_pair_loss(batch, ctx, settings_);
  }

 private:
  std::string name_;
  TokenLevelSettings settings_;
};

}  // namespace

std::unique_ptr<Trainer> make_token_level_trainer(std::string name, TokenLevelSettings settings) {
  return std::make_unique<TokenLevelTrainer>(std::move(name), std::move(settings));
}

}  // namespace aln::trainers
