#include "trainers/reference.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/error.h"
#include "trainers/sentence_embeddings.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {

at::Tensor LocalReference::token_logprobs(const buffer::SequenceBatch& sequences, double temperature) const {
  at::NoGradGuard no_grad;
  at::Tensor per_token = response_logprobs(model_, sequences, temperature).per_token;
  // A sharded reference lets its gathered head go now, before the policy's pass (nothing here
  // keeps it; trainers that read output_weight() call hidden_states(), not this).
  if (model::ParamGather* gather = model_.param_gather()) gather->pass_done();
  return per_token;
}

at::Tensor LocalReference::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                         const at::Tensor& positions) const {
  at::NoGradGuard no_grad;
  const at::Tensor h = model_.hidden_states(input_ids, attention_mask);
  return h.narrow(1, 0, h.size(1) - 1).reshape({-1, h.size(2)}).index_select(0, positions);
}

at::Tensor LocalReference::output_weight() const {
  at::Tensor weight = model_.output_weight();
  // A sharded reference's head is there only from a pass on (hidden_states(), not token_logprobs(),
  // which lets it go): read it after hidden_states().
  ALN_CHECK(model_.param_gather() == nullptr || weight.storage().nbytes() > 0,
            "the fully sharded reference's head is gathered only by a pass: call hidden_states() before "
            "output_weight()");
  return weight;
}

at::Tensor LocalReference::sentence_embeddings(const std::vector<std::vector<int64_t>>& sentences,
                                               int64_t pad_id) const {
  return mean_pooled_embeddings(model_, sentences, pad_id);
}

}  // namespace aln::trainers
