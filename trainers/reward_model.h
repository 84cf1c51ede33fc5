#pragma once
// Reward models as trainers see them, beside the reference service (reference.h): in this process or
// on ranks of their own, which a trainer cannot tell apart.
#include <ATen/core/Tensor.h>

#include "core/model/decoder.h"

namespace aln::trainers {

// A reward model as trainers use it: scores [B, num_labels] at each row's last non-padding token.
// The engine hands trainers the stage's reward models loaded in this process, or (placement:
// separate) stand-ins that ask the reward ranks; trainers cannot tell which.
class RewardModel {
 public:
  virtual ~RewardModel() = default;
  virtual at::Tensor scores(const at::Tensor& input_ids, const at::Tensor& attention_mask) const = 0;
};

// A reward model in this process (must outlive the wrapper).
class LocalRewardModel final : public RewardModel {
 public:
  explicit LocalRewardModel(const model::DecoderModel& model) : model_(model) {}
  at::Tensor scores(const at::Tensor& input_ids, const at::Tensor& attention_mask) const override {
    // Rows built on the host (scoring of text) go to the model's device here, once.
    return model_.scores(input_ids.to(model_.device()), attention_mask.to(model_.device()));
  }

 private:
  const model::DecoderModel& model_;
};

}  // namespace aln::trainers
