#include "trainers/ptalign/token_weights.h"

#include <algorithm>
#include <fstream>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace aln::trainers {

absl::StatusOr<std::vector<std::vector<int64_t>>> load_lexicon(
    const std::string& path, const std::function<std::vector<int64_t>(const std::string&)>& encode_text) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read the lexicon (trainer.ptalign.lexicon_path)"));
  }
  std::vector<std::vector<int64_t>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    const std::string word(absl::StripAsciiWhitespace(line));
    if (word.empty()) continue;
    for (const std::string& variant : {word, " " + word}) {
      auto ids = encode_text(variant);
      if (!ids.empty()) out.push_back(std::move(ids));
    }
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": the lexicon has no entries"));
  return out;
}

std::vector<float> span_token_weights(const buffer::Example& e,
                                      const std::function<std::string(const std::vector<int64_t>&)>& decode,
                                      int64_t end_id) {
  if (e.rejected_spans.empty()) return toxic_token_weights(e, aln::v1::NOT_IN_POSITIVE, {}, end_id);
  const auto& y = e.rejected;
  std::vector<size_t> offset(y.size() + 1, 0);  // token i covers [offset[i], offset[i + 1]) of the text
  std::vector<int64_t> prefix;
  for (size_t i = 0; i < y.size(); ++i) {
    if (y[i] != end_id) prefix.push_back(y[i]);
    offset[i + 1] = std::max(offset[i], decode(prefix).size());
  }
  const std::string text = decode(prefix);
  std::vector<float> w(y.size(), 0.0f);
  for (const auto& span : e.rejected_spans) {
    for (size_t at = text.find(span); !span.empty() && at != std::string::npos; at = text.find(span, at + 1)) {
      for (size_t i = 0; i < y.size(); ++i) {
        if (y[i] != end_id && offset[i] < at + span.size() && offset[i + 1] > at) w[i] = 1.0f;
      }
    }
  }
  return w;
}

std::vector<float> toxic_token_weights(const buffer::Example& e, aln::v1::TokenWeightSource source,
                                       const std::vector<std::vector<int64_t>>& lexicon, int64_t end_id) {
  const auto& y = e.rejected;
  std::vector<float> w(y.size(), 0.0f);
  switch (source) {
    case aln::v1::ALL_TOKENS:
      std::fill(w.begin(), w.end(), 1.0f);
      break;
    case aln::v1::LEXICON:
      for (const auto& phrase : lexicon) {
        if (phrase.empty() || phrase.size() > y.size()) continue;
        for (size_t i = 0; i + phrase.size() <= y.size(); ++i) {
          if (std::equal(phrase.begin(), phrase.end(), y.begin() + static_cast<long>(i))) {
            for (size_t k = 0; k < phrase.size(); ++k) w[i + k] = 1.0f;
          }
        }
      }
      break;
    default: {  // NOT_IN_POSITIVE
      const std::unordered_set<int64_t> positive(e.chosen.begin(), e.chosen.end());
      for (size_t i = 0; i < y.size(); ++i) w[i] = positive.count(y[i]) == 0 ? 1.0f : 0.0f;
      break;
    }
  }
  for (size_t i = 0; i < y.size(); ++i) {
    if (y[i] == end_id) w[i] = 0.0f;
  }
  return w;
}

}  // namespace aln::trainers
