// libFuzzer target: arbitrary bytes as a tokenizer.json. Loading must return a Status, never crash;
// a tokenizer that loads must encode and decode without crashing. The same bytes as text go through
// the NFC normalizer, which must not crash and must be idempotent (NFC(NFC(x)) == NFC(x)).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <cstdlib>

#include "core/tokenizer/normalize.h"
#include "core/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string once = aln::tokenizer::nfc(text);
  if (aln::tokenizer::nfc(once) != once) std::abort();
  auto tok = aln::tokenizer::Tokenizer::from_json(text, "fuzz");
  if (tok.ok()) {
    try {
      const auto ids = tok->encode("Hello world! \xc3\xa9\xe4\xb8\xad 123 'll \n\n");
      (void)tok->decode(ids);
    } catch (const std::exception&) {
      // Documented failure modes throw aln::Error; crashes and sanitizer reports are the bugs.
    }
  }
  return 0;
}
