// Tokenizer parity helper: encodes texts with Aln's tokenizer for tests/parity/tokenizer_parity.py.
// Usage: tokenizer_tool TOKENIZER_JSON TEXTS_JSONL  |  tokenizer_tool --nfc TEXTS_JSONL (NFC of each text)
// Each input line is a JSON string; each output line is
// {"ids": [...], "ids_no_special": [...], "decoded": "...", "pieces": [...], "decoded_skip": "..."}.
#include <fstream>
#include <iostream>
#include <string>

#include "core/tokenizer/normalize.h"
#include "core/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

int main(int argc, char** argv) {
  using aln::tokenizer::AddSpecialTokens;
  using aln::tokenizer::SkipSpecialTokens;
  if (argc == 3 && std::string(argv[1]) == "--nfc") {
    std::ifstream in(argv[2]);
    std::string line;
    while (std::getline(in, line)) {
      std::cout << nlohmann::json(aln::tokenizer::nfc(nlohmann::json::parse(line).get<std::string>())).dump() << "\n";
    }
    return 0;
  }
  if (argc != 3) {
    std::cerr << "usage: tokenizer_tool TOKENIZER_JSON TEXTS_JSONL\n";
    return 2;
  }
  auto tok = aln::tokenizer::Tokenizer::from_file(argv[1]);
  if (!tok.ok()) {
    std::cerr << tok.status() << "\n";
    return 1;
  }
  std::ifstream in(argv[2]);
  std::string line;
  while (std::getline(in, line)) {
    const std::string text = nlohmann::json::parse(line).get<std::string>();
    const auto ids = tok->encode(text);
    const auto ids_plain = tok->encode(text, AddSpecialTokens::kNo);
    nlohmann::json out;
    out["ids"] = ids;
    out["ids_no_special"] = ids_plain;
    out["decoded"] = tok->decode(ids_plain);
    out["pieces"] = tok->pre_tokenize(text);
    out["decoded_skip"] = tok->decode(ids, SkipSpecialTokens::kYes);
    std::cout << out.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace) << "\n";
  }
  std::cout << nlohmann::json{{"vocab_size", tok->vocab_size()}}.dump() << "\n";
  return 0;
}
