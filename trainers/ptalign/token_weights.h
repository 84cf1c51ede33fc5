#pragma once
// PT-ALIGN's fine-grained token weights on the toxic response (METHODS.md §2): 1 on harmful
// tokens, 0 elsewhere. Sources: tokens of y- absent from the paired y+ (default), a harmful-word
// lexicon, span annotations of the data, or every token (coarse unlikelihood, for ablation).
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/buffer/buffer.h"

namespace aln::trainers {

// The lexicon's phrases as token sequences: each line (trimmed, '#' comments skipped) encoded as is
// and with a leading space, so a word inside a sentence matches. Errors name the file.
absl::StatusOr<std::vector<std::vector<int64_t>>> load_lexicon(
    const std::string& path, const std::function<std::vector<int64_t>(const std::string&)>& encode_text);

// Weights for e.rejected (same length). `end_id` never gets a weight: the end token is not harmful.
std::vector<float> toxic_token_weights(const buffer::Example& e, aln::v1::TokenWeightSource source,
                                       const std::vector<std::vector<int64_t>>& lexicon, int64_t end_id);

// Span weights: 1 on every token of e.rejected whose text overlaps an occurrence of one of
// e.rejected_spans in the decoded response (token boundaries from decoding growing prefixes, so a
// span may start or end inside a token). Without spans: the not_in_positive weights.
std::vector<float> span_token_weights(const buffer::Example& e,
                                      const std::function<std::string(const std::vector<int64_t>&)>& decode,
                                      int64_t end_id);

}  // namespace aln::trainers
