#pragma once
// UTF-8 decoding that never fails: the tokenizer must take any byte string (model output, user
// files) without crashing, and byte-level BPE can represent any bytes, so invalid input is kept.
#include <cstddef>
#include <string>
#include <string_view>

namespace aln::tokenizer {

// One decoded unit of a byte string. For a well-formed character `valid` is true and `cp` is the
// code point. Otherwise the unit is the maximal ill-formed subpart at that position (at least one
// byte; the "substitution of maximal subparts" rule of Unicode ch. 3, which Rust's
// String::from_utf8_lossy and so `tokenizers` decoding use), `valid` is false and `cp` is U+FFFD.
struct Utf8Unit {
  char32_t cp = 0;
  std::size_t length = 0;
  bool valid = false;
};

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Decodes the unit starting at text[pos]; pos must be < text.size().
Utf8Unit decode_utf8(std::string_view text, std::size_t pos);

// Appends the UTF-8 encoding of a code point (surrogates and values past U+10FFFF become U+FFFD).
void append_utf8(char32_t cp, std::string& out);

// Replaces every ill-formed subpart by U+FFFD (the same output as Rust's from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

bool is_valid_utf8(std::string_view bytes);

}  // namespace aln::tokenizer
