// Tokenizer on the real GPT-2 tokenizer.json, small hand-made tokenizers, broken files and chat
// formats.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "core/error.h"
#include "core/tokenizer/chat_format.h"
#include "core/tokenizer/normalize.h"
#include "core/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace aln::tokenizer {
namespace {

using Ids = std::vector<int32_t>;

std::string repo(const std::string& rel) {
  const char* root = std::getenv("ALN_SOURCE_DIR");
  return std::string(root == nullptr ? "." : root) + "/" + rel;
}

const Tokenizer& gpt2() {
  static const Tokenizer tok = [] {
    auto t = Tokenizer::from_file(repo("examples/data/tokenizers/gpt2/tokenizer.json"));
    if (!t.ok()) ALN_FAIL(t.status().ToString());
    return std::move(*t);
  }();
  return tok;
}

// A tiny byte-level tokenizer: all 256 byte characters plus a few merges.
nlohmann::json tiny_json() {
  nlohmann::json vocab = nlohmann::json::object();
  // Byte characters for printable ASCII and the space ("Ġ").
  for (int c = '!'; c <= '~'; ++c) vocab[std::string(1, static_cast<char>(c))] = c - '!';
  vocab["Ġ"] = 94;
  vocab["he"] = 95;
  vocab["ll"] = 96;
  vocab["hell"] = 97;
  vocab["hello"] = 98;
  return {{"version", "1.0"},
          {"added_tokens", nlohmann::json::array({{{"id", 99}, {"content", "<|eot|>"}, {"special", true}}})},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array({"h e", "l l", "he ll", "hell o"})}}}};
}

absl::Status load_status(const nlohmann::json& j) { return Tokenizer::from_json(j.dump(), "tiny.json").status(); }

TEST(Gpt2, KnownIds) {
  const Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(tok.encode(""), Ids{});
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 50256);
  EXPECT_EQ(tok.id_to_token(995), "Ġworld");
  EXPECT_FALSE(tok.token_to_id("no such token").has_value());
  EXPECT_FALSE(tok.id_to_token(123456).has_value());
  EXPECT_EQ(tok.pre_tokenize("Hello world  "), (std::vector<std::string>{"Hello", "Ġworld", "ĠĠ"}));
  // <|endoftext|> has the common GPT-2 flags (not single_word, lstrip or rstrip): it matches after a
  // letter and keeps the whitespace around it (ids from `tokenizers`).
  EXPECT_EQ(tok.encode("a <|endoftext|> b"), (Ids{64, 220, 50256, 275}));
  EXPECT_EQ(tok.encode("a<|endoftext|>b"), (Ids{64, 50256, 65}));
  EXPECT_EQ(tok.encode("  <|endoftext|>\n\n x"), (Ids{220, 220, 50256, 628, 2124}));
  EXPECT_EQ(tok.encode("Hi<|endoftext|>\n"), (Ids{17250, 50256, 198}));
}

// The GPT-2 tokenizer.json as first shipped marked <|endoftext|> single_word + lstrip + rstrip
// (issue 25); rebuilt here from the shipped file by setting the three flags back.
nlohmann::json gpt2_with_old_end_of_text_flags() {
  std::ifstream in(repo("examples/data/tokenizers/gpt2/tokenizer.json"));
  nlohmann::json j = nlohmann::json::parse(in);
  for (auto& t : j["added_tokens"]) {
    if (t["content"] == "<|endoftext|>") t["single_word"] = t["lstrip"] = t["rstrip"] = true;
  }
  return j;
}

TEST(Gpt2, OldEndOfTextFlagsSplitTheTokenAfterALetter) {
  auto old = Tokenizer::from_json(gpt2_with_old_end_of_text_flags().dump(), "gpt2-old-flags.json");
  ASSERT_TRUE(old.ok()) << old.status();
  // What tools that append the end-of-text as text met with the old file (ids from `tokenizers`).
  EXPECT_EQ(old->encode("a <|endoftext|> b"), (Ids{64, 50256, 65}));
  EXPECT_EQ(old->encode("a<|endoftext|>b"), (Ids{64, 27, 91, 437, 1659, 5239, 91, 29, 65}));
  EXPECT_EQ(old->encode("  <|endoftext|>\n\n x"), (Ids{50256, 87}));
}

TEST(Gpt2, DecodeRoundTrip) {
  const Tokenizer& tok = gpt2();
  for (const std::string s : {"Hello world", "  tabs\tand\r\nlines \n\n", "emoji 😀 中文 e\u0301", "It's 12345!"}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  EXPECT_EQ(tok.decode(tok.encode("a <|endoftext|> b"), SkipSpecialTokens::kYes), "a  b");
  EXPECT_EQ(tok.decode(Ids{447}), "\xEF\xBF\xBD");  // first half of U+2019: replaced
  EXPECT_EQ(tok.decode_bytes(Ids{447}), "\xE2\x80");
  EXPECT_THROW(tok.decode(Ids{999999}), aln::Error);
}

TEST(Gpt2, InvalidUtf8RoundTripsAsBytes) {
  const Tokenizer& tok = gpt2();
  const std::string bad = "ok \xFF\xC3 then \xE2\x82 end\xF0";
  const Ids ids = tok.encode(bad);
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(tok.decode_bytes(ids), bad);
  EXPECT_EQ(tok.decode(ids), "ok \xEF\xBF\xBD\xEF\xBF\xBD then \xEF\xBF\xBD end\xEF\xBF\xBD");
}

TEST(Gpt2, AddSpecialTokens) {
  auto loaded = Tokenizer::from_file(repo("examples/data/tokenizers/gpt2/tokenizer.json"));
  ASSERT_TRUE(loaded.ok());
  Tokenizer tok = std::move(*loaded);
  const Ids ids = tok.add_special_tokens({"<|helpful_3|>", "<|harmless_0|>", "<|endoftext|>"});
  EXPECT_EQ(ids, (Ids{50257, 50258, 50256}));
  EXPECT_EQ(tok.vocab_size(), 50259);
  EXPECT_EQ(tok.encode("x<|helpful_3|>y"), (Ids{87, 50257, 88}));
  EXPECT_TRUE(tok.is_special(50257));
  EXPECT_EQ(tok.decode(tok.encode("x<|helpful_3|>y")), "x<|helpful_3|>y");
  EXPECT_EQ(tok.decode(tok.encode("x<|helpful_3|>y"), SkipSpecialTokens::kYes), "xy");
}

TEST(Gpt2, ConcurrentEncodeSharesTheCache) {
  const Tokenizer& tok = gpt2();
  const std::string text = "The same words again and again, again and again: the cache is shared. ";
  const Ids expected = tok.encode(text);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (tok.encode(text) != expected) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Tiny, MergesInBothFormsAndTemplate) {
  auto legacy = Tokenizer::from_json(tiny_json().dump());
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(legacy->encode("hello"), Ids{98});
  EXPECT_EQ(legacy->encode("hell<|eot|>"), (Ids{97, 99}));

  nlohmann::json j = tiny_json();
  using nlohmann::json;
  j["model"]["merges"] = json::array(
      {json::array({"h", "e"}), json::array({"l", "l"}), json::array({"he", "ll"}), json::array({"hell", "o"})});
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<|eot|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<|eot|>", {{"id", "<|eot|>"}, {"ids", {99}}, {"tokens", {"<|eot|>"}}}}}}};
  auto pairs = Tokenizer::from_json(j.dump());
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  EXPECT_EQ(pairs->encode("hello"), (Ids{99, 98}));
  EXPECT_EQ(pairs->encode("hello", AddSpecialTokens::kNo), Ids{98});
}

void expect_error(const nlohmann::json& j, const std::string& needle) {
  const absl::Status s = load_status(j);
  EXPECT_FALSE(s.ok()) << needle;
  EXPECT_TRUE(absl::StrContains(s.message(), "tiny.json")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), needle)) << s;
}

// model.type nested 10^6 deep crashed the loader (its error serialised the value recursively).
TEST(Malformed, DeepNestingRefusedBeforeParsing) {
  std::string text = tiny_json().dump();
  const std::string type = R"("type":"BPE")";
  const size_t at = text.find(type);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, type.size(), R"("type":)" + std::string(1'000'000, '[') + std::string(1'000'000, ']'));
  const absl::Status s = Tokenizer::from_json(text, "tiny.json").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "tiny.json: $: JSON nested deeper than 128 levels (at byte ")) << s;
  // Shallow but unsupported: the message quotes a short excerpt, not the value.
  nlohmann::json j = tiny_json();
  j["model"]["type"] = std::string(1'000'000, 'W');
  const absl::Status wide = load_status(j);
  EXPECT_TRUE(absl::StrContains(wide.message(), "unsupported model type \"WWWW")) << wide.message().substr(0, 200);
  EXPECT_LT(wide.message().size(), 200u);
}

TEST(Malformed, Rejected) {
  EXPECT_FALSE(Tokenizer::from_json("{not json", "tiny.json").ok());
  EXPECT_TRUE(absl::StrContains(Tokenizer::from_json("{not json", "tiny.json").status().message(), "not valid JSON"));
  EXPECT_EQ(Tokenizer::from_file("/nonexistent/tokenizer.json").status().code(), absl::StatusCode::kNotFound);

  nlohmann::json j = tiny_json();
  j.erase("model");
  expect_error(j, "$.model");
  j = tiny_json();
  j["model"].erase("vocab");
  expect_error(j, "$.model.vocab");
  j = tiny_json();
  j["model"]["merges"].push_back("x q");  // "xq" is not in the vocabulary
  expect_error(j, "$.model.merges[4]");
  j = tiny_json();
  j["model"]["merges"].push_back("abc");
  expect_error(j, "$.model.merges[4]");
  j = tiny_json();
  j["model"]["type"] = "WordPiece";
  expect_error(j, "$.model.type");
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(j, "$.pre_tokenizer.type");
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}},
                          {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  expect_error(j, "$.pre_tokenizer.pretokenizers[0].pattern.Regex");
  j = tiny_json();
  j["added_tokens"][0]["id"] = "seven";
  expect_error(j, "$.added_tokens[0].id");
  j = tiny_json();
  j["model"]["vocab"]["he"] = -3;
  expect_error(j, "$.model.vocab");
  j = tiny_json();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, "$.decoder.type");
  j = tiny_json();
  j["pre_tokenizer"]["use_regex"] = "yes";
  expect_error(j, "$.pre_tokenizer.use_regex");
  j = tiny_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error(j, "$.normalizer");
  j = tiny_json();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
  expect_error(j, "$.normalizer");
}

// NFC on hand-checked cases (the parity test compares whole tokenizers with `tokenizers`).
TEST(Nfc, ComposesReordersAndKeepsInvalidBytes) {
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc("e\u0301"), "\u00e9");                    // e + acute -> é
  EXPECT_EQ(nfc("\u212b"), "\u00c5");                     // Angstrom sign (singleton) -> Å
  EXPECT_EQ(nfc("\u1100\u1161\u11a8"), "\uac01");         // Hangul jamo L V T -> 각
  EXPECT_EQ(nfc("\u0958"), "\u0915\u093c");               // composition exclusion stays decomposed
  EXPECT_EQ(nfc("a\u0301\u0328"), nfc("a\u0328\u0301"));  // canonical order: ogonek (202) before acute (230)
  EXPECT_EQ(nfc("a\u0328\u0301"), "\u0105\u0301");        // ą + acute (no precomposed ą́)
  EXPECT_EQ(nfc("e\u0304\u0301"), "\u1e17");              // ē + acute -> ḗ (two steps)
  EXPECT_EQ(nfc("\u00e9"), "\u00e9");                     // already NFC
  EXPECT_EQ(nfc(std::string("e\xff\u0301", 4)), std::string("e\xff\u0301", 4));  // a bad byte blocks composition
}

TEST(Nfc, NormalizerFromTokenizerJson) {
  nlohmann::json j = tiny_json();
  auto plain = Tokenizer::from_json(j.dump(), "tiny.json");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  auto with_nfc = Tokenizer::from_json(j.dump(), "tiny.json");
  ASSERT_TRUE(plain.ok() && with_nfc.ok()) << with_nfc.status();
  // The decomposed and the composed spelling give the same ids once normalized.
  EXPECT_EQ(with_nfc->encode("e\u0301", AddSpecialTokens::kNo), with_nfc->encode("\u00e9", AddSpecialTokens::kNo));
  EXPECT_NE(plain->encode("e\u0301", AddSpecialTokens::kNo), plain->encode("\u00e9", AddSpecialTokens::kNo));
}

TEST(ChatFormat, Render) {
  const std::vector<ChatMessage> chat = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  EXPECT_EQ(render_chat(chat, ChatFormat::kHH, GenerationPrompt::kYes),
            "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant:");
  EXPECT_EQ(
      render_chat(chat, ChatFormat::kChatML),
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n");
  const std::vector<ChatMessage> one = {{"system", "Be safe."}, {"user", "Hi"}};
  EXPECT_EQ(render_chat(one, ChatFormat::kLlama3, GenerationPrompt::kYes),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe safe.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render_chat(one, ChatFormat::kChatML, GenerationPrompt::kYes),
            "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_THROW(render_chat(one, ChatFormat::kHH), aln::Error);
  EXPECT_EQ(*chat_format_from_name("ChatML"), ChatFormat::kChatML);
  EXPECT_EQ(*chat_format_from_name("llama3"), ChatFormat::kLlama3);
  EXPECT_FALSE(chat_format_from_name("alpaca").ok());
}

}  // namespace
}  // namespace aln::tokenizer
