// The guards every reader of untrusted JSON uses: the nesting limit and the bounded excerpts.
#include "core/json_guard.h"

#include <gtest/gtest.h>

#include <string>

namespace aln {
namespace {

using nlohmann::json;

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(JsonGuardTest, DepthLimitCountsOnlyStructure) {
  EXPECT_TRUE(check_json_depth(nested(128)).ok());
  const absl::Status s = check_json_depth(nested(129));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "JSON nested deeper than 128 levels (at byte 128)");
  // Brackets inside strings, escaped quotes included, are text.
  EXPECT_TRUE(check_json_depth(R"({"a": ")" + std::string(1000, '[') + R"(\"[[[", "b": [1]})").ok());
  EXPECT_FALSE(check_json_depth(R"({"a": "\\", "b": [[[1]]]})", 3).ok());  // the string ends at \\"
  EXPECT_TRUE(check_json_depth(R"({"a": "\\", "b": [[1]]})", 3).ok());
  // A million levels: refused at once, nothing built.
  EXPECT_FALSE(check_json_depth(nested(1'000'000)).ok());
}

TEST(JsonGuardTest, ParseRefusesDeepValuesAndCapsParserMessages) {
  json j;
  EXPECT_FALSE(parse_untrusted_json(nested(1'000'000), &j).ok());
  EXPECT_TRUE(parse_untrusted_json(R"({"a": [1, 2]})", &j).ok());
  EXPECT_EQ(j["a"][1], 2);
  // nlohmann's message quotes everything it read of an unterminated string.
  const absl::Status s = parse_untrusted_json("\"" + std::string(10'000'000, 'x'), &j);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 300u);
  EXPECT_NE(s.message().find("parse error"), absl::string_view::npos) << s.message();
  EXPECT_NE(s.message().find("more bytes)"), absl::string_view::npos) << s.message();
}

TEST(JsonGuardTest, ExcerptsAreShortAndCompact) {
  EXPECT_EQ(json_excerpt(json::parse("[2,3]")), "[2,3]");
  EXPECT_EQ(json_excerpt(json::parse(R"({"a":1,"b":null})")), R"({"a":1,"b":null})");
  EXPECT_EQ(json_excerpt(json::parse(nested(100))), "[[[[...]]]]");
  EXPECT_EQ(json_excerpt(json("short")), "\"short\"");
  const std::string long_excerpt = json_excerpt(json(std::string(1'000'000, 'y')));
  EXPECT_EQ(long_excerpt, "\"" + std::string(80, 'y') + "...\"");
  json many = json::array();
  for (int i = 0; i < 100'000; ++i) many.push_back(i);
  const std::string list = json_excerpt(many);
  EXPECT_LT(list.size(), 100u) << list;
  EXPECT_EQ(list.substr(list.size() - 5), ",...]");
  // A cut never splits a UTF-8 sequence ("é" is two bytes).
  std::string accents = "a";
  for (int i = 0; i < 100; ++i) accents += "\xc3\xa9";
  accents = json_excerpt(json(accents));
  EXPECT_TRUE(json::accept(accents)) << accents;
}

TEST(JsonGuardTest, CappedExcerptEscapesControlCharacters) {
  EXPECT_EQ(capped_excerpt("a\nb\tc\x01"), "a\\nb\\tc\\x01");
  EXPECT_EQ(capped_excerpt(std::string(300, 'z'), 10), "zzzzzzzzzz... (290 more bytes)");
}

}  // namespace
}  // namespace aln
