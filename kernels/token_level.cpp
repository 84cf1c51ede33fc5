#include "kernels/token_level.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "core/error.h"

namespace aln::kernels {
namespace {

// [d > quantile_{1-mu}(d)] along the last dimension, as float.
at::Tensor above_var(const at::Tensor& d, double mu) {
  const at::Tensor var = at::quantile(d, 1.0 - mu, /*dim=*/-1, /*keepdim=*/true, "linear");
  return (d > var).to(d.scalar_type());
}

at::Tensor cvar_mask(const at::Tensor& d, const DivergenceOptions& o) {
  if (!o.split_vocabulary) return above_var(d, o.mu);
  const int64_t v = d.size(-1);
  const int64_t first = (v + 1) / 2;
  return at::cat({above_var(d.narrow(-1, 0, first), o.mu), above_var(d.narrow(-1, first, v - first), o.mu)}, -1);
}

void check_chunk(const at::Tensor& z, const at::Tensor& r, const at::Tensor& y) {
  ALN_CHECK(z.dim() == 2 && r.sizes() == z.sizes(),
            "policy and reference logits must both be [positions, vocab] of the same shape");
  ALN_CHECK(y.dim() == 1 && y.size(0) == z.size(0), "targets must be [positions]");
}

}  // namespace

PositionTerms position_terms(const at::Tensor& policy_logits, const at::Tensor& reference_logits,
                             const at::Tensor& targets, const DivergenceOptions& o) {
  check_chunk(policy_logits, reference_logits, targets);
  at::NoGradGuard no_grad;
  const at::Tensor logp = at::log_softmax(policy_logits.detach(), -1);
  const at::Tensor ref_logp = at::log_softmax(reference_logits.detach(), -1);
  const at::Tensor ref_p = ref_logp.exp();
  const at::Tensor y = targets.unsqueeze(1);
  PositionTerms out;
  out.policy_logp = logp.gather(1, y).squeeze(1);
  out.reference_logp = ref_logp.gather(1, y).squeeze(1);
  const at::Tensor d = ref_logp - logp;
  switch (o.kind) {
    case TokenDivergence::kSequenceKl:
      out.divergence = (ref_p * d).sum(-1);
      break;
    case TokenDivergence::kCvar:
      out.divergence = (ref_p * d * cvar_mask(d, o)).sum(-1);
      break;
    case TokenDivergence::kEntropic:
      // (1/mu) log sum_v exp(log pi_ref(v) + mu d_v), in log space: (pi_ref/pi)^mu overflows.
      out.divergence = at::logsumexp(ref_logp + o.mu * d, -1) / o.mu;
      break;
  }
  return out;
}

at::Tensor position_terms_grad(const at::Tensor& policy_logits, const at::Tensor& reference_logits,
                               const at::Tensor& targets, const at::Tensor& a, const at::Tensor& b,
                               const DivergenceOptions& o) {
  check_chunk(policy_logits, reference_logits, targets);
  at::NoGradGuard no_grad;
  const at::Tensor logp = at::log_softmax(policy_logits.detach(), -1);
  const at::Tensor p = logp.exp();
  const at::Tensor ref_logp = at::log_softmax(reference_logits.detach(), -1);
  const at::Tensor ref_p = ref_logp.exp();
  const at::Tensor ac = a.to(p.scalar_type()).unsqueeze(1);
  const at::Tensor bc = b.to(p.scalar_type()).unsqueeze(1);
  // d log pi(y)/dz = onehot(y) - pi.
  at::Tensor grad = -ac * p;
  grad.scatter_add_(1, targets.unsqueeze(1), ac);
  // With d_v = log pi_ref(v) - log pi(v):  d d_v / d z_k = pi_k - [v = k].
  switch (o.kind) {
    case TokenDivergence::kSequenceKl:  // sum_v pi_ref d_v  ->  pi - pi_ref
      grad += bc * (p - ref_p);
      break;
    case TokenDivergence::kCvar: {  // sum_v pi_ref m_v d_v  ->  pi * sum(pi_ref m) - pi_ref m
      const at::Tensor d = ref_logp - logp;
      const at::Tensor weighted = ref_p * cvar_mask(d, o);
      grad += bc * (p * weighted.sum(-1, true) - weighted);
      break;
    }
    case TokenDivergence::kEntropic: {  // w = softmax(log pi_ref + mu d)  ->  pi - w
      const at::Tensor w = at::softmax(ref_logp + o.mu * (ref_logp - logp), -1);
      grad += bc * (p - w);
      break;
    }
  }
  return grad;
}

PairLossOutput tdpo_family_loss(const PairLogprobs& in, const at::Tensor& dw, const at::Tensor& dl, PairVariant variant,
                                double beta, double alpha) {
  ALN_CHECK(beta > 0, "beta must be positive, got ", beta);
  ALN_CHECK(dw.sizes() == in.policy_chosen.sizes() && dl.sizes() == dw.sizes(),
            "divergence sums must be [pairs] like the log-prob sums");
  const at::Tensor h = (in.policy_chosen - in.reference_chosen) - (in.policy_rejected - in.reference_rejected);
  const at::Tensor penalty = variant == PairVariant::kOne ? dl - dw : alpha * (dl - dw.detach());
  PairLossOutput out;
  out.per_pair = -at::log_sigmoid(beta * (h - penalty));
  out.loss = out.per_pair.mean();
  out.rewards_chosen = (beta * (in.policy_chosen - in.reference_chosen)).detach();
  out.rewards_rejected = (beta * (in.policy_rejected - in.reference_rejected)).detach();
  out.accuracy = (out.rewards_chosen > out.rewards_rejected).to(at::kDouble).mean();
  out.margin = (out.rewards_chosen - out.rewards_rejected).to(at::kDouble).mean();
  return out;
}

TokenLevelResult token_level_pair_loss(const at::Tensor& policy_logits, const at::Tensor& reference_logits,
                                       const at::Tensor& targets, const at::Tensor& sequence, int64_t pairs,
                                       const DivergenceOptions& options, PairVariant variant, double beta, double alpha,
                                       int64_t chunk) {
  ALN_CHECK(chunk > 0, "chunk must be positive");
  const int64_t n = policy_logits.size(0);
  const auto dtype = policy_logits.scalar_type();
  at::Tensor sums_policy = at::zeros({2 * pairs}, policy_logits.options().requires_grad(false));
  at::Tensor sums_reference = at::zeros_like(sums_policy);
  at::Tensor sums_divergence = at::zeros_like(sums_policy);
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t c = std::min(chunk, n - s);
    PositionTerms t = position_terms(policy_logits.narrow(0, s, c), reference_logits.narrow(0, s, c),
                                     targets.narrow(0, s, c), options);
    const at::Tensor rows = sequence.narrow(0, s, c);
    sums_policy.index_add_(0, rows, t.policy_logp);
    sums_reference.index_add_(0, rows, t.reference_logp);
    sums_divergence.index_add_(0, rows, t.divergence);
  }
  TokenLevelCoefficients k =
      tdpo_family_coefficients(sums_policy, sums_reference, sums_divergence, pairs, variant, beta, alpha);
  TokenLevelResult out;
  out.loss = k.loss;
  const at::Tensor& a = k.policy;
  const at::Tensor& b = k.divergence;
  out.divergence_chosen = sums_divergence.narrow(0, 0, pairs);
  out.divergence_rejected = sums_divergence.narrow(0, pairs, pairs);
  out.policy_logits_grad = at::empty_like(policy_logits, policy_logits.options().dtype(dtype));
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t c = std::min(chunk, n - s);
    const at::Tensor rows = sequence.narrow(0, s, c);
    out.policy_logits_grad.narrow(0, s, c).copy_(
        position_terms_grad(policy_logits.narrow(0, s, c), reference_logits.narrow(0, s, c), targets.narrow(0, s, c),
                            a.index_select(0, rows), b.index_select(0, rows), options));
  }
  return out;
}

TokenLevelCoefficients tdpo_family_coefficients(const at::Tensor& sums_policy, const at::Tensor& sums_reference,
                                                const at::Tensor& sums_divergence, int64_t pairs, PairVariant variant,
                                                double beta, double alpha) {
  ALN_CHECK(sums_policy.dim() == 1 && sums_policy.size(0) == 2 * pairs, "sums must be [2 * pairs]");
  at::AutoGradMode enable(true);
  at::Tensor lp = sums_policy.detach().clone().requires_grad_(true);
  at::Tensor dv = sums_divergence.detach().clone().requires_grad_(true);
  PairLogprobs in;
  in.policy_chosen = lp.narrow(0, 0, pairs);
  in.policy_rejected = lp.narrow(0, pairs, pairs);
  in.reference_chosen = sums_reference.detach().narrow(0, 0, pairs);
  in.reference_rejected = sums_reference.detach().narrow(0, pairs, pairs);
  TokenLevelCoefficients out;
  out.loss = tdpo_family_loss(in, dv.narrow(0, 0, pairs), dv.narrow(0, pairs, pairs), variant, beta, alpha);
  out.loss.loss.backward();
  out.loss.loss = out.loss.loss.detach();
  out.loss.per_pair = out.loss.per_pair.detach();
  out.policy = lp.grad().defined() ? lp.grad() : at::zeros_like(lp);
  out.divergence = dv.grad().defined() ? dv.grad() : at::zeros_like(dv);
  return out;
}

}  // namespace aln::kernels
