#include "core/tokenizer/byte_level.h"

#include "core/tokenizer/utf8.h"

namespace aln::tokenizer {

const ByteLevelMap& ByteLevelMap::get() {
  static const ByteLevelMap map;
  return map;
}

ByteLevelMap::ByteLevelMap() {
  char_to_byte_.fill(-1);
  const auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = printable(b) ? static_cast<char32_t>(b) : next++;
    append_utf8(cp, byte_to_utf8_[b]);
    char_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

void ByteLevelMap::encode(std::string_view bytes, std::string& out) const {
  for (char c : bytes) out += byte_to_utf8_[static_cast<uint8_t>(c)];
}

std::optional<uint8_t> ByteLevelMap::decode_char(char32_t cp) const {
  if (cp >= char_to_byte_.size() || char_to_byte_[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(char_to_byte_[cp]);
}

}  // namespace aln::tokenizer
