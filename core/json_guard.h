#pragma once
// Guards for JSON read from files Aln did not write (model headers, tokenizer.json, data rows, a
// job's train_log.jsonl): a nesting limit checked before parsing, and bounded excerpts for errors.
// nlohmann parses and frees iteratively, but dump(), copies and comparisons recurse once per level,
// so a value nested 10^6 deep must never be built, and no error may re-serialise a value whole.
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace aln {

// serde_json's default recursion limit, which the Rust readers of safetensors and tokenizers
// use: a file nested deeper does not load in Hugging Face either.
inline constexpr int kMaxJsonDepth = 128;

// Error excerpts of untrusted values and of parser messages stay below these sizes.
inline constexpr std::size_t kJsonExcerptChars = 80;
inline constexpr std::size_t kParserMessageChars = 240;

// OK when no array/object in `text` nests deeper than `max_depth` (brackets inside strings do not
// count); else InvalidArgument "JSON nested deeper than N levels (at byte B)". One linear pass, no
// allocation, so it is safe on any input, valid JSON or not.
absl::Status check_json_depth(std::string_view text, int max_depth = kMaxJsonDepth);

// A short, one-line rendering of `value` for an error message: scalars as JSON, strings cut at
// `max_chars`, arrays and objects shown a few levels deep and elided ("...") past the budget.
std::string json_excerpt(const nlohmann::json& value, std::size_t max_chars = kJsonExcerptChars);

// `text` cut to `max_chars` bytes (on a UTF-8 boundary) with the number of bytes left out, and
// control characters escaped; for parser messages that quote the input ("last read: '...'").
std::string capped_excerpt(std::string_view text, std::size_t max_chars = kParserMessageChars);

// check_json_depth, then nlohmann::json::parse; on failure InvalidArgument whose message is
// the capped parser message (without a file name: callers prefix theirs).
absl::Status parse_untrusted_json(std::string_view text, nlohmann::json* out, int max_depth = kMaxJsonDepth);

}  // namespace aln
