#pragma once
// Added tokens (special like <|endoftext|> and plain ones): matched in the raw text before
// pre-tokenization, leftmost-longest, and never split by BPE.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace aln::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;  // only matches with no letter/digit right before or after it
  bool lstrip = false;       // swallows the whitespace before it
  bool rstrip = false;       // swallows the whitespace after it
  // `tokenizers` matches non-normalized tokens on the whole text first and normalized ones in the
  // gaps left over; without a normalizer only this order differs, and it is kept.
  bool normalized = false;
};

// A piece of the input: either an added token (id set) or text for the pre-tokenizer.
struct Segment {
  std::string_view text;
  std::optional<int32_t> id;
};

class AddedVocabulary {
 public:
  // Adds or replaces (same content) a token.
  void add(const AddedToken& token);
  std::vector<Segment> split(std::string_view text) const;
  // The two passes of split() on their own, for a tokenizer with a normalizer: non-normalized
  // tokens are matched in the raw text, normalized ones in the normalized gaps between them.
  std::vector<Segment> split_raw(std::string_view text) const;
  void split_normalized(std::string_view normalized, std::vector<Segment>& out) const;

  std::optional<int32_t> token_to_id(std::string_view content) const;
  const AddedToken* find_id(int32_t id) const;
  int32_t max_id() const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  enum class Pass { kRaw, kNormalized };
  // Matches of one pass over `text`, appended to `out` (gaps as text segments).
  void split_pass(std::string_view text, Pass pass, std::vector<Segment>& out) const;
  void rebuild_index();

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, std::size_t> by_content_;
  std::unordered_map<int32_t, std::size_t> by_id_;
  // For each first byte, candidate token indices, longest first.
  std::array<std::vector<std::size_t>, 256> by_first_byte_;
};

}  // namespace aln::tokenizer
