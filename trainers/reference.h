#pragma once
// The frozen reference as a trainer reaches it. The engine puts one in every StepContext: the model
// in this process (LocalReference), or a stand-in that asks the reference ranks each step
// (placement: separate; trainers/engine/reference_role.*). Both give the same numbers, and a
// trainer cannot tell which one it has: it asks for what it needs, nothing more.
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/buffer/buffer.h"
#include "core/model/decoder.h"

namespace aln::trainers {

class Reference {
 public:
  virtual ~Reference() = default;
  // Per-token log-probs [B, T-1] of `sequences` with the logits divided by `temperature`, as
  // response_logprobs(...).per_token gives them (zero where no response token is scored).
  virtual at::Tensor token_logprobs(const buffer::SequenceBatch& sequences, double temperature) const = 0;
  // Final hidden states at `positions` (indices into the B x (T-1) positions that predict a next
  // token, i.e. hidden_states(...).narrow(1, 0, T-1).reshape({-1, H}).index_select(0, positions)): [N, H].
  virtual at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                   const at::Tensor& positions) const = 0;
  // The output projection [V, H] (frozen).
  virtual at::Tensor output_weight() const = 0;
  // The mean of each token sequence's final hidden states, [n, H] float32 (trainers/sentence_embeddings.h).
  virtual at::Tensor sentence_embeddings(const std::vector<std::vector<int64_t>>& sentences, int64_t pad_id) const = 0;
};

// The reference in this process (it must outlive the wrapper).
class LocalReference final : public Reference {
 public:
  explicit LocalReference(const model::DecoderModel& model) : model_(model) {}
  at::Tensor token_logprobs(const buffer::SequenceBatch& sequences, double temperature) const override;
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                           const at::Tensor& positions) const override;
  at::Tensor output_weight() const override;
  at::Tensor sentence_embeddings(const std::vector<std::vector<int64_t>>& sentences, int64_t pad_id) const override;

 private:
  const model::DecoderModel& model_;
};

}  // namespace aln::trainers
