#pragma once
// Byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json` (GPT-2, Llama-3 and Qwen2
// style), producing exactly the ids of the Python `tokenizers` library (tests/parity checks this).
//
// Pipeline of encode(): added tokens are matched in the raw text first (never split), the rest is
// cut by the pre-tokenizer regex, each piece is byte-level mapped and merged by BPE, and the
// post-processor may add BOS-like tokens.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/added_tokens.h"
#include "core/tokenizer/bpe.h"
#include "core/tokenizer/pretokenize.h"

namespace aln::tokenizer {

enum class AddSpecialTokens { kNo, kYes };   // run the post-processor template (BOS etc.)
enum class SkipSpecialTokens { kNo, kYes };  // leave special tokens out of decoded text

// What the loader understood of tokenizer.json; built by load_tokenizer_config (loader.cpp).
struct TokenizerConfig {
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added_tokens;
  // Pre-tokenizer: an optional Split regex, then ByteLevel (with or without the GPT-2 regex).
  std::optional<SplitPattern> split;
  bool byte_level_add_prefix_space = false;
  bool byte_level_use_regex = true;  // the GPT-2 regex inside ByteLevel, after any Split
  // Post-processor template for one sequence: ids before and after it.
  std::vector<int32_t> template_prefix;
  std::vector<int32_t> template_suffix;
  bool nfc = false;  // normalizer: Unicode NFC (Qwen2)
};

absl::StatusOr<TokenizerConfig> load_tokenizer_config(std::string_view json_text, std::string_view origin);

class Tokenizer {
 public:
  // Reads and validates a tokenizer.json; errors name the file and the JSON path.
  static absl::StatusOr<Tokenizer> from_file(const std::string& path);
  // Same from the JSON text; `origin` names it in errors.
  static absl::StatusOr<Tokenizer> from_json(std::string_view json_text, std::string_view origin = "<string>");

  // Any bytes are accepted; invalid UTF-8 is kept byte for byte (see pretokenize.h).
  std::vector<int32_t> encode(std::string_view text, AddSpecialTokens add_special = AddSpecialTokens::kYes) const;
  // Text of the ids; bytes that are not valid UTF-8 (e.g. a cut multi-byte character) become
  // U+FFFD, as in `tokenizers`. Unknown ids throw aln::Error.
  std::string decode(std::span<const int32_t> ids, SkipSpecialTokens skip = SkipSpecialTokens::kNo) const;
  // The raw bytes of the ids, without the U+FFFD replacement (for streaming and byte exactness).
  std::string decode_bytes(std::span<const int32_t> ids, SkipSpecialTokens skip = SkipSpecialTokens::kNo) const;

  // The byte-level mapped pieces that BPE sees, without added-token matching (what
  // `tokenizers`' pre_tokenizer.pre_tokenize_str returns); for debugging and parity tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // Largest id + 1 over the model vocabulary and the added tokens (the embedding rows needed).
  int32_t vocab_size() const;
  bool is_special(int32_t id) const;

  // Adds special tokens (never split, skipped by SkipSpecialTokens::kYes). A token that already
  // exists keeps its id and becomes special; a new one gets the next free id. Returns the ids.
  std::vector<int32_t> add_special_tokens(const std::vector<std::string>& tokens);

 private:
  explicit Tokenizer(TokenizerConfig config);
  // Calls `fn(mapped_word)` for each byte-level mapped word of a text segment.
  template <typename Fn>
  void for_each_word(std::string_view segment, Fn&& fn) const;
  template <typename Fn>
  void for_each_word_of_piece(std::string_view piece, Fn& fn) const;

  TokenizerConfig config_;
  AddedVocabulary added_;
};

}  // namespace aln::tokenizer
