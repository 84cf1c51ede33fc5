#include "core/tokenizer/added_tokens.h"

#include <algorithm>

#include "core/tokenizer/unicode_tables.h"
#include "core/tokenizer/utf8.h"

namespace aln::tokenizer {
namespace {

// Code point of the last character of `text` (0 when empty or ill-formed at the end).
char32_t last_char(std::string_view text) {
  if (text.empty()) return 0;
  std::size_t pos = text.size() - 1;
  while (pos > 0 && text.size() - pos < 4 && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) --pos;
  const Utf8Unit u = decode_utf8(text, pos);
  return (u.valid && pos + u.length == text.size()) ? u.cp : 0;
}

char32_t first_char(std::string_view text) {
  if (text.empty()) return 0;
  const Utf8Unit u = decode_utf8(text, 0);
  return u.valid ? u.cp : 0;
}

bool is_word_char(char32_t cp) { return cp != 0 && (is_letter(cp) || is_number(cp)); }

}  // namespace

void AddedVocabulary::add(const AddedToken& token) {
  if (token.content.empty()) return;
  const auto it = by_content_.find(token.content);
  if (it != by_content_.end()) {
    tokens_[it->second] = token;
  } else {
    tokens_.push_back(token);
  }
  rebuild_index();
}

void AddedVocabulary::rebuild_index() {
  by_content_.clear();
  by_id_.clear();
  for (auto& list : by_first_byte_) list.clear();
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    by_content_[tokens_[i].content] = i;
    by_id_[tokens_[i].id] = i;
    by_first_byte_[static_cast<uint8_t>(tokens_[i].content[0])].push_back(i);
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](std::size_t a, std::size_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

std::optional<int32_t> AddedVocabulary::token_to_id(std::string_view content) const {
  const auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedVocabulary::find_id(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

int32_t AddedVocabulary::max_id() const {
  int32_t m = -1;
  for (const auto& t : tokens_) m = std::max(m, t.id);
  return m;
}

std::vector<Segment> AddedVocabulary::split(std::string_view text) const {
  std::vector<Segment> raw;
  split_pass(text, Pass::kRaw, raw);
  std::vector<Segment> out;
  for (const Segment& s : raw) {
    if (s.id) {
      out.push_back(s);
    } else {
      split_pass(s.text, Pass::kNormalized, out);
    }
  }
  return out;
}

std::vector<Segment> AddedVocabulary::split_raw(std::string_view text) const {
  std::vector<Segment> out;
  split_pass(text, Pass::kRaw, out);
  return out;
}

void AddedVocabulary::split_normalized(std::string_view normalized, std::vector<Segment>& out) const {
  split_pass(normalized, Pass::kNormalized, out);
}

void AddedVocabulary::split_pass(std::string_view text, Pass pass, std::vector<Segment>& out) const {
  const auto is_space_at_start = [&](std::size_t pos, std::size_t* len) {
    const Utf8Unit u = decode_utf8(text, pos);
    *len = u.length;
    return u.valid && is_white_space(u.cp);
  };
  std::size_t done = 0;  // end of the last emitted segment
  std::size_t pos = 0;
  while (pos < text.size()) {
    // Leftmost-longest: the longest token that starts at the first position where any starts.
    const AddedToken* match = nullptr;
    for (std::size_t i : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& t = tokens_[i];
      if (t.normalized != (pass == Pass::kNormalized)) continue;
      if (text.substr(pos).starts_with(t.content)) {
        match = &t;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    std::size_t start = pos;
    std::size_t stop = pos + match->content.size();
    pos = stop;  // a rejected match is skipped as a whole, like a non-overlapping automaton scan
    if (match->single_word &&
        (is_word_char(last_char(text.substr(0, start))) || is_word_char(first_char(text.substr(stop))))) {
      continue;
    }
    if (match->lstrip) {
      std::size_t s = start;
      while (s > done) {
        std::size_t p = s - 1;
        while (p > done && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
        std::size_t len = 0;
        if (!is_space_at_start(p, &len) || p + len != s) break;
        s = p;
      }
      start = s;
    }
    if (match->rstrip) {
      std::size_t len = 0;
      while (stop < text.size() && is_space_at_start(stop, &len)) stop += len;
      pos = stop;
    }
    if (done < start) out.push_back({text.substr(done, start - done), std::nullopt});
    out.push_back({text.substr(start, stop - start), match->id});
    done = stop;
  }
  if (done < text.size()) out.push_back({text.substr(done), std::nullopt});
}

}  // namespace aln::tokenizer
