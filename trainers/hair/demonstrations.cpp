#include "trainers/hair/demonstrations.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/json_guard.h"

namespace aln::trainers::hair {

const char* const kDefaultDemonstrationTemplate =
    "Draft: the request asks for help with {category}.\n"
    "Draft: following it could cause real harm.\n"
    "Draft: decline briefly, say why, offer a safe alternative.\n"
    "I can't help with that. It falls under {category}, and helping could hurt people. "
    "If there is a safe, legal goal behind the question, I'm glad to help with that instead.";

std::string render_demonstration(const std::string& tmpl, const std::string& prompt, const std::string& category) {
  std::string lower = category;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return absl::StrReplaceAll(tmpl, {{"{prompt}", prompt}, {"{category}", lower}});
}

absl::StatusOr<std::map<std::string, std::string>> read_demonstrations(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open the demonstrations file (trainer.hair.demonstrations); check the path"));
  }
  std::map<std::string, std::string> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = absl::StrCat(path, ":", n);
    if (absl::Status depth = check_json_depth(line); !depth.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", depth.message()));
    }
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
    for (const char* field : {"prompt", "demonstration"}) {
      if (!j.contains(field) || !j[field].is_string() || j[field].get<std::string>().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": field \"", field, "\" must be a non-empty string"));
      }
    }
    out[j["prompt"].get<std::string>()] = j["demonstration"].get<std::string>();
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no demonstrations in the file"));
  return out;
}

std::string category_of(const buffer::Example& e) { return e.category.empty() ? "uncategorized" : e.category; }

int64_t balance_categories(std::vector<buffer::Example>& examples, int64_t per_category, uint64_t seed) {
  std::map<std::string, std::vector<size_t>> by_category;
  for (size_t i = 0; i < examples.size(); ++i) by_category[category_of(examples[i])].push_back(i);
  if (by_category.empty()) return 0;
  int64_t keep = per_category;
  if (keep == 0) {
    keep = static_cast<int64_t>(examples.size());
    for (const auto& [c, idx] : by_category) keep = std::min<int64_t>(keep, static_cast<int64_t>(idx.size()));
  }
  std::vector<char> kept(examples.size(), 0);
  std::mt19937_64 rng(seed);
  for (auto& [c, idx] : by_category) {
    std::shuffle(idx.begin(), idx.end(), rng);
    for (size_t i = 0; i < idx.size() && static_cast<int64_t>(i) < keep; ++i) kept[idx[i]] = 1;
  }
  std::vector<buffer::Example> out;
  for (size_t i = 0; i < examples.size(); ++i) {
    if (kept[i]) out.push_back(std::move(examples[i]));
  }
  const int64_t dropped = static_cast<int64_t>(examples.size() - out.size());
  examples = std::move(out);
  return dropped;
}

std::vector<std::string> split_sentences(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    const size_t b = cur.find_first_not_of(" \t\r\n");
    const size_t e = cur.find_last_not_of(" \t\r\n");
    if (b != std::string::npos) {
      std::string s = cur.substr(b, e - b + 1);
      if (std::any_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c) || c >= 0x80; })) {
        out.push_back(std::move(s));
      }
    }
    cur.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      flush();
      continue;
    }
    cur += c;
    if ((c == '.' || c == '!' || c == '?') &&
        (i + 1 == text.size() || std::isspace(static_cast<unsigned char>(text[i + 1])))) {
      flush();
    }
  }
  flush();
  return out;
}

std::string metric_suffix(const std::string& category) {
  std::string out;
  for (unsigned char c : category) {
    if (std::isalnum(c)) {
      out += static_cast<char>(std::tolower(c));
    } else if (!out.empty() && out.back() != '_') {
      out += '_';
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out.empty() ? "uncategorized" : out;
}

}  // namespace aln::trainers::hair
