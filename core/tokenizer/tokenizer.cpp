#include "core/tokenizer/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "core/tokenizer/byte_level.h"
#include "core/tokenizer/normalize.h"
#include "core/tokenizer/utf8.h"

namespace aln::tokenizer {

absl::StatusOr<Tokenizer> Tokenizer::from_json(std::string_view json_text, std::string_view origin) {
  auto config = load_tokenizer_config(json_text, origin);
  if (!config.ok()) return config.status();
  return Tokenizer(std::move(*config));
}

Tokenizer::Tokenizer(TokenizerConfig config) : config_(std::move(config)) {
  for (const AddedToken& t : config_.added_tokens) added_.add(t);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, AddSpecialTokens add_special) const {
  std::vector<int32_t> ids;
  if (add_special == AddSpecialTokens::kYes) ids = config_.template_prefix;
  auto emit = [&](const Segment& s) {
    if (s.id) {
      ids.push_back(*s.id);
    } else {
      for_each_word(s.text, [&](std::string_view word) { config_.model->encode_word(word, ids); });
    }
  };
  if (!config_.nfc) {
    for (const Segment& s : added_.split(text)) emit(s);
  } else {
    // As `tokenizers`: non-normalized added tokens on the raw text, then the normalizer on the
    // gaps, then normalized added tokens and the model on the normalized text.
    for (const Segment& raw : added_.split_raw(text)) {
      if (raw.id) {
        emit(raw);
        continue;
      }
      const std::string normalized = nfc(raw.text);
      std::vector<Segment> parts;
      added_.split_normalized(normalized, parts);
      for (const Segment& s : parts) emit(s);
    }
  }
  if (add_special == AddSpecialTokens::kYes) {
    ids.insert(ids.end(), config_.template_suffix.begin(), config_.template_suffix.end());
  }
  return ids;
}

template <typename Fn>
void Tokenizer::for_each_word(std::string_view segment, Fn&& fn) const {
  if (!config_.split) {
    for_each_word_of_piece(segment, fn);
    return;
  }
  std::vector<std::string_view> pieces;
  split_pretokens(segment, *config_.split, pieces);
  for (std::string_view piece : pieces) for_each_word_of_piece(piece, fn);
}

template <typename Fn>
void Tokenizer::for_each_word_of_piece(std::string_view piece, Fn& fn) const {
  if (piece.empty()) return;  // no prefix space for nothing, as in `tokenizers`
  // ByteLevel's prefix space goes in front of every piece the Split before it produced.
  std::string prefixed;
  if (config_.byte_level_add_prefix_space && !piece.starts_with(' ')) {
    prefixed = " ";
    prefixed.append(piece);
    piece = prefixed;
  }
  std::vector<std::string_view> words;
  if (config_.byte_level_use_regex) {
    split_pretokens(piece, SplitPattern::kGpt2, words);
  } else {
    words.push_back(piece);
  }
  const ByteLevelMap& bytes = ByteLevelMap::get();
  std::string mapped;
  for (std::string_view word : words) {
    mapped.clear();
    bytes.encode(word, mapped);
    fn(std::string_view(mapped));
  }
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string> out;
  for_each_word(text, [&](std::string_view word) { out.emplace_back(word); });
  return out;
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, SkipSpecialTokens skip) const {
  const ByteLevelMap& bytes = ByteLevelMap::get();
  std::string out;
  std::string token_bytes;
  for (int32_t id : ids) {
    std::string_view token;
    if (const AddedToken* added = added_.find_id(id)) {
      if (added->special && skip == SkipSpecialTokens::kYes) continue;
      token = added->content;
    } else if (const std::string* t = config_.model->id_to_token(id)) {
      token = *t;
    } else {
      ALN_FAIL("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
    }
    // A token whose characters are all byte-level characters stands for those bytes; any other
    // token (an added token such as "hi there") is its own UTF-8 text.
    token_bytes.clear();
    bool mapped = true;
    for (std::size_t pos = 0; pos < token.size() && mapped;) {
      const Utf8Unit u = decode_utf8(token, pos);
      const auto b = u.valid ? bytes.decode_char(u.cp) : std::nullopt;
      if (b) {
        token_bytes.push_back(static_cast<char>(*b));
      } else {
        mapped = false;
      }
      pos += u.length;
    }
    if (mapped) {
      out += token_bytes;
    } else {
      out.append(token);
    }
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, SkipSpecialTokens skip) const {
  return utf8_lossy(decode_bytes(ids, skip));
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto id = added_.token_to_id(token)) return id;
  return config_.model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* added = added_.find_id(id)) return added->content;
  if (const std::string* t = config_.model->id_to_token(id)) return *t;
  return std::nullopt;
}

int32_t Tokenizer::vocab_size() const { return std::max(config_.model->max_id(), added_.max_id()) + 1; }

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* added = added_.find_id(id);
  return added != nullptr && added->special;
}

std::vector<int32_t> Tokenizer::add_special_tokens(const std::vector<std::string>& tokens) {
  std::vector<int32_t> ids;
  for (const std::string& content : tokens) {
    ALN_CHECK(!content.empty(), "a special token cannot be empty");
    AddedToken t;
    t.content = content;
    t.id = token_to_id(content).value_or(vocab_size());
    t.special = true;
    t.normalized = false;
    added_.add(t);
    ids.push_back(t.id);
  }
  return ids;
}

}  // namespace aln::tokenizer
