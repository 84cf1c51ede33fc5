#pragma once
// GPT-2's byte-to-unicode mapping: every byte becomes a printable character (printable Latin-1
// bytes map to themselves, the other 68 to U+0100..U+0143), so BPE vocabularies can be plain
// strings while still covering arbitrary bytes.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace aln::tokenizer {

class ByteLevelMap {
 public:
  // The one immutable table (built on first use).
  static const ByteLevelMap& get();

  // UTF-8 of the character that stands for `byte`.
  const std::string& encode_byte(uint8_t byte) const { return byte_to_utf8_[byte]; }
  // Appends the mapped characters of all bytes of `bytes`.
  void encode(std::string_view bytes, std::string& out) const;
  // The byte a mapped character stands for, if it is one.
  std::optional<uint8_t> decode_char(char32_t cp) const;

 private:
  ByteLevelMap();
  std::array<std::string, 256> byte_to_utf8_;
  std::array<int16_t, 324> char_to_byte_;  // mapped code points are all below U+0144
};

}  // namespace aln::tokenizer
