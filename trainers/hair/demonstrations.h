#pragma once
// HAIR's data side: the category-balanced prompt set, Chain-of-Draft demonstrations (from a
// template, or read from a file), and the sentence splitting that data hardness works on.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/buffer/buffer.h"

namespace aln::trainers::hair {

// The built-in Chain-of-Draft template [D]: a few terse drafts of introspection (what is asked, the
// harm, the decision), then the answer. {prompt} and {category} are replaced.
extern const char* const kDefaultDemonstrationTemplate;

std::string render_demonstration(const std::string& tmpl, const std::string& prompt, const std::string& category);

// JSONL of {"prompt": ..., "demonstration": ...} -> demonstration by prompt text. Errors name the
// file, the line and the field.
absl::StatusOr<std::map<std::string, std::string>> read_demonstrations(const std::string& path);

// The category an example trains under ("uncategorized" when the data has none).
std::string category_of(const buffer::Example& e);

// Keeps `per_category` examples of each category (0: the smallest category's count), chosen by a
// seeded shuffle and kept in their original order. Returns how many were dropped.
int64_t balance_categories(std::vector<buffer::Example>& examples, int64_t per_category, uint64_t seed);

// Sentences of a text: split after '.', '!', '?' followed by whitespace, and at line breaks;
// trimmed; pieces without a letter or digit are dropped.
std::vector<std::string> split_sentences(const std::string& text);

// A category as a metric-name suffix: lower case, runs of other characters -> '_'.
std::string metric_suffix(const std::string& category);

}  // namespace aln::trainers::hair
