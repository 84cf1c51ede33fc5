#pragma once
// The pre-tokenizer regexes of byte-level BPE tokenizers, as hand-written scanners: std::regex has
// no Unicode classes, and a scanner is faster than a general engine. Each scanner reproduces what
// Oniguruma's leftmost-first alternation with backtracking returns for its pattern (including the
// `\s+(?!\S)` lookahead), so the pieces equal Hugging Face `tokenizers`' Split(Isolated) output.
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace aln::tokenizer {

enum class SplitPattern {
  kGpt2,    // 's|'t|... | ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,  // case-insensitive contractions, letters with one leading non-letter, \p{N}{1,3}
  kQwen2,   // as kLlama3 with single digits
};

// The exact regex source text (as stored in tokenizer.json) of a pattern.
std::string_view split_pattern_regex(SplitPattern pattern);

// Recognises a regex by its source text; any other regex is NotFound (we only run known ones).
absl::StatusOr<SplitPattern> split_pattern_from_regex(std::string_view regex);

// Appends the pieces of `text` to `out` (views into `text`, in order, covering all of it).
// Invalid UTF-8 never fails: each ill-formed subpart counts as one punctuation-like character
// (neither letter, number nor space), so its bytes stay in the pieces and survive byte-level BPE.
void split_pretokens(std::string_view text, SplitPattern pattern, std::vector<std::string_view>& out);

}  // namespace aln::tokenizer
