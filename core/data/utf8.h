#pragma once
#include <cstdint>
#include <string_view>

namespace aln::data {
// Byte offset of the first invalid UTF-8 sequence (overlongs, surrogates and code points past
// U+10FFFF count as invalid), or -1 when the text is valid.
int64_t first_invalid_utf8(std::string_view text);
}  // namespace aln::data
