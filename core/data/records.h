#pragma once
// Records the data readers produce: untokenised text plus the labels trainers need. Every record
// remembers where it came from (file and 1-based line) so later errors can point at the input.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace aln::data {

struct Message {
  std::string role;  // system, user, assistant
  std::string content;
};

struct Origin {
  std::string file;
  int64_t line = 0;
};

// A prompt with a preferred (chosen) and a dispreferred (rejected) response. The prompt is either
// plain text already in its chat format (HH dialogues) or messages rendered later by a chat format.
struct PreferencePair {
  std::string prompt;
  std::vector<Message> prompt_messages;  // non-empty when the source was conversational
  std::string chosen;
  std::string rejected;
  // Safety labels when the source has them (1 = unsafe), per response.
  std::optional<int> unsafe_chosen;
  std::optional<int> unsafe_rejected;
  // PKU-SafeRLHF-style fields: which response is safer (0 = chosen, 1 = rejected) and categories.
  std::optional<int> safer_index;
  std::vector<std::string> harm_categories;
  // Harmful parts of the rejected response when annotated ("rejected_spans": strings, or
  // [start, end) byte offsets into rejected), as text.
  std::vector<std::string> rejected_spans;
  Origin origin;
};

struct PromptRecord {
  std::string prompt;
  std::string category;  // harm category or dataset type when present
  Origin origin;
};

struct SftRecord {
  std::string prompt;
  std::vector<Message> prompt_messages;
  std::string response;
  Origin origin;
};

}  // namespace aln::data
