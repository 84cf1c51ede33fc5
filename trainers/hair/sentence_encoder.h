#pragma once
// The sentence encoder behind HAIR's data hardness [D]: the mean over a sentence's tokens of a
// decoder's final hidden states (the policy as the stage starts by default, any Hugging Face decoder
// with trainer.hair.encoder). Pluggable: anything that maps token sequences to [N, H] embeddings.
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/model/decoder.h"

namespace aln::trainers::hair {

// [N, H] float32 embeddings of N token sequences (each non-empty), batched `batch` at a time.
at::Tensor mean_pooled_embeddings(const model::DecoderModel& encoder,
                                  const std::vector<std::vector<int64_t>>& sentences, int64_t pad_id,
                                  int64_t batch = 64);

}  // namespace aln::trainers::hair
