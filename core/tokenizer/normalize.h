#pragma once
// Unicode canonical composition (NFC), the normalizer of tokenizer.json files such as Qwen2's:
// canonical decomposition (tables + Hangul arithmetic), canonical ordering of combining marks, then
// canonical composition (UAX #15). Invalid UTF-8 bytes are kept as they are (they block
// composition across them). ASCII-only text is returned unchanged without decoding.
#include <string>
#include <string_view>

namespace aln::tokenizer {

std::string nfc(std::string_view text);

// The Unicode version of the tables (from the Python that generated them).
const char* normalization_unicode_version();

}  // namespace aln::tokenizer
