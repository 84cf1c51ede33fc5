#include "trainers/sequence_logprobs.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/error.h"
#include "kernels/fused_logprobs.h"

namespace aln::trainers {
namespace {

// Log-softmax of half-precision logits in float32 (mixed precision computes the projection in
// bfloat16; the log-probs and everything summed from them stay float32, as under autocast).
at::Tensor as_float(const at::Tensor& logits) {
  return logits.scalar_type() == at::kBFloat16 || logits.scalar_type() == at::kHalf ? logits.to(at::kFloat) : logits;
}

}  // namespace

kernels::ResponseLogprobs response_logprobs(const model::DecoderModel& model, const buffer::SequenceBatch& batch,
                                            double temperature) {
  const int64_t b = batch.input_ids.size(0);
  const int64_t t = batch.input_ids.size(1);
  ALN_CHECK(t >= 2, "sequences need at least two tokens to score a response");
  // Position p predicts token p + 1: score the positions whose next token is a response token.
  at::Tensor scored = batch.response_mask.narrow(1, 1, t - 1).reshape(-1) > 0;
  // Indices into [B * (T-1)]: laid out on the host by the collate functions (a nonzero() here would
  // wait for the device).
  at::Tensor flat = batch.scored.defined() ? batch.scored : scored.nonzero().squeeze(1);
  if (flat.numel() == 0) {
    at::Tensor logits = as_float(model.logits(batch.input_ids, batch.attention_mask));
    if (temperature != 1.0) logits = logits / temperature;
    return kernels::response_logprobs(logits, batch.input_ids, batch.response_mask);
  }
  at::Tensor hidden = model.hidden_states(batch.input_ids, batch.attention_mask, nullptr, batch.right_padded);
  const int64_t h = hidden.size(2);
  at::Tensor selected = hidden.narrow(1, 0, t - 1).reshape({-1, h}).index_select(0, flat);
  at::Tensor targets = batch.input_ids.narrow(1, 1, t - 1).reshape(-1).index_select(0, flat);
  // The projection and log-softmax fused over vocabulary tiles: no [tokens, V] logits exist, in the
  // forward or the backward pass (kernels/fused_logprobs.h); or, on the CPU where they are at most
  // 128 MiB, all the logits in one tile kept for the backward pass (no recompute: measured faster).
  const at::Tensor weight = model.output_weight();
  const bool tiles = kernels::fused_logprobs_preferred(selected.size(0), weight.size(0), selected.device());
  at::Tensor lp = kernels::fused_token_logprobs(selected, weight, targets, temperature, 0, /*keep_logits=*/!tiles);
  at::Tensor rows = at::div(flat, t - 1, "floor");
  kernels::ResponseLogprobs out;
  out.sums = at::zeros({b}, lp.options()).index_add(0, rows, lp);
  out.tokens = scored.reshape({b, t - 1}).sum(1).to(lp.scalar_type());
  out.per_token = at::zeros({b * (t - 1)}, lp.options()).index_add(0, flat, lp).view({b, t - 1});
  return out;
}

at::Tensor response_sums(const at::Tensor& per_token, const buffer::SequenceBatch& batch) {
  const int64_t b = batch.input_ids.size(0);
  const int64_t t = batch.input_ids.size(1);
  ALN_CHECK(per_token.dim() == 2 && per_token.size(0) == b && per_token.size(1) == t - 1,
            "per-token log-probs must be [B, T-1] for the batch's sequences");
  at::Tensor flat = batch.scored.defined()
                        ? batch.scored
                        : (batch.response_mask.narrow(1, 1, t - 1).reshape(-1) > 0).nonzero().squeeze(1);
  at::Tensor rows = at::div(flat, t - 1, "floor");
  return at::zeros({b}, per_token.options()).index_add(0, rows, per_token.reshape(-1).index_select(0, flat));
}

void reference_pair_logprobs(const model::DecoderModel& reference, const std::vector<buffer::Example*>& batch,
                             int64_t pad_id) {
  at::NoGradGuard no_grad;
  std::vector<const buffer::Example*> view(batch.begin(), batch.end());
  buffer::SequenceBatch b = buffer::collate_pairs(view, pad_id).to(reference.device());
  // One copy to the host for the whole batch (rows: chosen ones, then rejected ones).
  const at::Tensor sums = response_logprobs(reference, b).sums.to(at::kDouble).to(at::kCPU).contiguous();
  const double* v = sums.data_ptr<double>();
  const size_t n = batch.size();
  for (size_t i = 0; i < n; ++i) {
    batch[i]->reference_chosen = v[i];
    batch[i]->reference_rejected = v[n + i];
  }
}

}  // namespace aln::trainers
