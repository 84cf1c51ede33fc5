#pragma once
// Sentence embeddings from a decoder: the mean over a sentence's tokens of its final hidden states.
// One of the things a trainer may ask of the reference (ReferenceQuery::kSentenceEmbeddings;
// HAIR's data hardness uses it), so it lives beside the other reference services, not in a method.
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/model/decoder.h"

namespace aln::trainers {

// [N, H] float32 embeddings of N token sequences (each non-empty), batched `batch` at a time.
at::Tensor mean_pooled_embeddings(const model::DecoderModel& encoder,
                                  const std::vector<std::vector<int64_t>>& sentences, int64_t pad_id,
                                  int64_t batch = 64);

}  // namespace aln::trainers
