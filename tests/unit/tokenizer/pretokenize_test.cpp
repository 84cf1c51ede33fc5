// Pre-tokenizer scanners, UTF-8 handling and Unicode classes (expected pieces checked against
// `tokenizers` by hand; tests/parity compares whole encodings).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/tokenizer/pretokenize.h"
#include "core/tokenizer/unicode_tables.h"
#include "core/tokenizer/utf8.h"

namespace aln::tokenizer {
namespace {

std::vector<std::string> pieces(std::string_view text, SplitPattern pattern) {
  std::vector<std::string_view> views;
  split_pretokens(text, pattern, views);
  return {views.begin(), views.end()};
}

using V = std::vector<std::string>;

TEST(Pretokenize, Gpt2) {
  EXPECT_EQ(pieces("Hello world", SplitPattern::kGpt2), (V{"Hello", " world"}));
  EXPECT_EQ(pieces("I'm here, it's 2024!!", SplitPattern::kGpt2),
            (V{"I", "'m", " here", ",", " it", "'s", " 2024", "!!"}));
  EXPECT_EQ(pieces("a   b  ", SplitPattern::kGpt2), (V{"a", "  ", " b", "  "}));
  EXPECT_EQ(pieces("x\n\ny", SplitPattern::kGpt2), (V{"x", "\n", "\n", "y"}));
  EXPECT_EQ(pieces("WE'RE 'S", SplitPattern::kGpt2), (V{"WE", "'", "RE", " '", "S"}));  // case-sensitive
  EXPECT_EQ(pieces("", SplitPattern::kGpt2), V{});
}

TEST(Pretokenize, Llama3AndQwen2) {
  EXPECT_EQ(pieces("WE'RE here", SplitPattern::kLlama3), (V{"WE", "'RE", " here"}));
  EXPECT_EQ(pieces("12345", SplitPattern::kLlama3), (V{"123", "45"}));
  EXPECT_EQ(pieces("12345", SplitPattern::kQwen2), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(pieces("a,\n\nb", SplitPattern::kLlama3), (V{"a", ",\n\n", "b"}));
  EXPECT_EQ(pieces("a \n \n  b", SplitPattern::kLlama3), (V{"a", " \n \n", " ", " b"}));
  EXPECT_EQ(pieces("\tfoo", SplitPattern::kLlama3), (V{"\tfoo"}));
  EXPECT_EQ(pieces("'\xC5\xBF", SplitPattern::kLlama3), (V{"'\xC5\xBF"}));  // 'ſ folds to 's
}

TEST(Pretokenize, InvalidUtf8IsKeptAsPunctuation) {
  const std::string bad = "ab\xFF\xFE cd\xC3";
  const V got = pieces(bad, SplitPattern::kGpt2);
  EXPECT_EQ(got, (V{"ab", "\xFF\xFE", " cd", "\xC3"}));
  std::string joined;
  for (const auto& p : pieces(bad, SplitPattern::kLlama3)) joined += p;
  EXPECT_EQ(joined, bad);
}

TEST(Utf8, MaximalSubparts) {
  EXPECT_EQ(utf8_lossy("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(utf8_lossy("\xE2\x82"), "\xEF\xBF\xBD");           // truncated 3-byte: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
}

TEST(Unicode, Classes) {
  EXPECT_TRUE(is_letter(U'é'));
  EXPECT_TRUE(is_letter(U'中'));
  EXPECT_FALSE(is_letter(U'\u0301'));  // combining mark is Mn
  EXPECT_TRUE(is_number(U'٣'));
  EXPECT_TRUE(is_number(U'½'));
  EXPECT_TRUE(is_white_space(0x85));
  EXPECT_TRUE(is_white_space(0x3000));
  EXPECT_FALSE(is_white_space(0x1C));  // Python's isspace() says yes; Oniguruma's \s says no
  EXPECT_FALSE(is_white_space(0x200B));
}

TEST(Pretokenize, PatternRecognition) {
  for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kLlama3, SplitPattern::kQwen2}) {
    auto got = split_pattern_from_regex(split_pattern_regex(p));
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, p);
  }
  EXPECT_FALSE(split_pattern_from_regex("\\w+").ok());
}

}  // namespace
}  // namespace aln::tokenizer
