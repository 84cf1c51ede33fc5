#include "trainers/reference.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "trainers/sentence_embeddings.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {

at::Tensor LocalReference::token_logprobs(const buffer::SequenceBatch& sequences, double temperature) const {
  at::NoGradGuard no_grad;
  return response_logprobs(model_, sequences, temperature).per_token;
}

at::Tensor LocalReference::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                         const at::Tensor& positions) const {
  at::NoGradGuard no_grad;
  const at::Tensor h = model_.hidden_states(input_ids, attention_mask);
  return h.narrow(1, 0, h.size(1) - 1).reshape({-1, h.size(2)}).index_select(0, positions);
}

at::Tensor LocalReference::output_weight() const { return model_.output_weight(); }

at::Tensor LocalReference::sentence_embeddings(const std::vector<std::vector<int64_t>>& sentences,
                                               int64_t pad_id) const {
  return mean_pooled_embeddings(model_, sentences, pad_id);
}

}  // namespace aln::trainers
