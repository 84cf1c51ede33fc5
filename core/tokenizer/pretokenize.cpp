#include "core/tokenizer/pretokenize.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/tokenizer/unicode_tables.h"
#include "core/tokenizer/utf8.h"

namespace aln::tokenizer {
namespace {

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class Kind : uint8_t { kLetter, kNumber, kSpace, kOther };

struct Char {
  char32_t cp;
  std::size_t begin;  // byte offset in the text
  Kind kind;
};

Kind kind_of(const Utf8Unit& u) {
  if (!u.valid) return Kind::kOther;
  if (is_letter(u.cp)) return Kind::kLetter;
  if (is_number(u.cp)) return Kind::kNumber;
  if (is_white_space(u.cp)) return Kind::kSpace;
  return Kind::kOther;
}

bool is_newline(char32_t cp) { return cp == '\r' || cp == '\n'; }

// Scans one pattern over the decoded characters; `chars` has a sentinel at index n whose `begin`
// is the text size, so chars[j].begin is the end offset of a match that ends before index j.
class Scanner {
 public:
  Scanner(const std::vector<Char>& chars, SplitPattern pattern)
      : c_(chars), n_(chars.size() - 1), pattern_(pattern) {}

  // End index of the match that starts at index i (always > i: every pattern ends in \s+ and
  // covers letters, numbers and everything else, so no character is left unmatched).
  std::size_t match_at(std::size_t i) const {
    return pattern_ == SplitPattern::kGpt2 ? match_gpt2(i) : match_llama(i);
  }

 private:
  char32_t cp(std::size_t i) const { return i < n_ ? c_[i].cp : 0; }
  bool is(std::size_t i, Kind k) const { return i < n_ && c_[i].kind == k; }
  std::size_t run(std::size_t i, Kind k) const {
    while (is(i, k)) ++i;
    return i;
  }

  // 's 't 're 've 'm 'll 'd; 0 when there is none at i.
  std::size_t contraction(std::size_t i, bool ignore_case) const {
    if (cp(i) != '\'') return 0;
    const auto fold = [&](char32_t c) -> char32_t {
      if (!ignore_case) return c;
      if (c == 0x17F) return 's';  // LATIN SMALL LETTER LONG S case-folds to 's'
      return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    };
    const char32_t a = fold(cp(i + 1));
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const char32_t b = fold(cp(i + 2));
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
  }

  // \s+(?!\S)|\s+ at a whitespace character: the whole run at the end of the text; otherwise the
  // run minus its last character (which then leads the next word), or that single character.
  std::size_t trailing_space(std::size_t i) const {
    const std::size_t j = run(i, Kind::kSpace);
    if (j == n_ || j - i < 2) return j;
    return j - 1;
  }

  std::size_t match_gpt2(std::size_t i) const {
    if (std::size_t j = contraction(i, false)) return j;
    // ` ?X+` for X in letters, numbers, other: an optional ASCII space, then a run of one class.
    if (cp(i) == ' ' && i + 1 < n_ && c_[i + 1].kind != Kind::kSpace) return run(i + 1, c_[i + 1].kind);
    if (c_[i].kind != Kind::kSpace) return run(i, c_[i].kind);
    return trailing_space(i);
  }

  std::size_t match_llama(std::size_t i) const {
    if (std::size_t j = contraction(i, true)) return j;
    const Kind k = c_[i].kind;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (k != Kind::kLetter && k != Kind::kNumber && !is_newline(cp(i)) && is(i + 1, Kind::kLetter)) {
      return run(i + 1, Kind::kLetter);
    }
    if (k == Kind::kLetter) return run(i, Kind::kLetter);
    if (k == Kind::kNumber) {
      const std::size_t max_digits = pattern_ == SplitPattern::kLlama3 ? 3 : 1;
      return std::min(run(i, Kind::kNumber), i + max_digits);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    std::size_t other = n_ + 1;
    if (cp(i) == ' ' && is(i + 1, Kind::kOther)) other = i + 1;
    if (k == Kind::kOther) other = i;
    if (other <= n_) {
      std::size_t j = run(other, Kind::kOther);
      while (j < n_ && is_newline(cp(j))) ++j;
      return j;
    }
    // \s*[\r\n]+ : the greedy \s* backs off to the last line break of the whitespace run.
    const std::size_t j = run(i, Kind::kSpace);
    for (std::size_t p = j; p > i; --p) {
      if (is_newline(cp(p - 1))) return p;
    }
    return trailing_space(i);
  }

  const std::vector<Char>& c_;
  std::size_t n_;
  SplitPattern pattern_;
};

}  // namespace

std::string_view split_pattern_regex(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::kGpt2:
      return kGpt2Regex;
    case SplitPattern::kLlama3:
      return kLlama3Regex;
    case SplitPattern::kQwen2:
      return kQwen2Regex;
  }
  return kGpt2Regex;
}

absl::StatusOr<SplitPattern> split_pattern_from_regex(std::string_view regex) {
  for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kLlama3, SplitPattern::kQwen2}) {
    if (regex == split_pattern_regex(p)) return p;
  }
  return absl::NotFoundError(absl::StrCat(
      "unsupported pre-tokenizer regex (only the GPT-2, Llama-3 and Qwen2 patterns are implemented): ",
      std::string(regex)));
}

void split_pretokens(std::string_view text, SplitPattern pattern, std::vector<std::string_view>& out) {
  std::vector<Char> chars;
  chars.reserve(text.size() + 1);
  for (std::size_t pos = 0; pos < text.size();) {
    const Utf8Unit u = decode_utf8(text, pos);
    chars.push_back({u.valid ? u.cp : kReplacementChar, pos, kind_of(u)});
    pos += u.length;
  }
  chars.push_back({0, text.size(), Kind::kOther});
  const Scanner scanner(chars, pattern);
  const std::size_t n = chars.size() - 1;
  for (std::size_t i = 0; i < n;) {
    const std::size_t j = scanner.match_at(i);
    out.push_back(text.substr(chars[i].begin, chars[j].begin - chars[i].begin));
    i = j;
  }
}

}  // namespace aln::tokenizer
