#include "core/data/readers.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/data/source_file.h"
#include "core/data/utf8.h"
#include "core/json_guard.h"

namespace aln::data {
namespace {

using nlohmann::json;
constexpr const char* kAssistantTurn = "\n\nAssistant:";

// A problem with one field of one row; `reason` is the short key used for skip counts.
struct RowProblem {
  std::string field;
  std::string what;
  std::string reason;
};

// Reads a required string field; checks type, UTF-8 and (optionally) emptiness.
bool get_text(const json& row, const std::string& field, bool allow_empty, std::string* out, RowProblem* problem) {
  if (!row.contains(field) || row.at(field).is_null()) {
    *problem = {field, "missing", "missing field"};
    return false;
  }
  if (!row.at(field).is_string()) {
    *problem = {field, absl::StrCat("wrong type: expected a string, got ", row.at(field).type_name()), "wrong type"};
    return false;
  }
  *out = row.at(field).get<std::string>();
  const int64_t bad = first_invalid_utf8(*out);
  if (bad >= 0) {
    *problem = {field, absl::StrCat("not valid UTF-8 (byte ", bad, ")"), "invalid UTF-8"};
    return false;
  }
  if (!allow_empty && absl::StripAsciiWhitespace(*out).empty()) {
    *problem = {field, "empty", "empty text"};
    return false;
  }
  return true;
}

bool get_messages(const json& row, const std::string& field, std::vector<Message>* out, RowProblem* problem) {
  const json& list = row.at(field);
  out->clear();
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    const std::string where = absl::StrCat(field, "[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m.at("role").is_string() ||
        !m.at("content").is_string()) {
      *problem = {where, "expected {\"role\": string, \"content\": string}", "bad message"};
      return false;
    }
    out->push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  }
  return true;
}

std::optional<int> unsafe_flag(const json& row, const std::string& field) {
  if (!row.contains(field) || !row.at(field).is_boolean()) return std::nullopt;
  return row.at(field).get<bool>() ? 0 : 1;
}

// Shared driver: runs `convert` on every row, applying the bad-record policy.
template <typename Record, typename Convert>
absl::StatusOr<std::vector<Record>> read_rows(const std::string& path, const ReadOptions& options, ReadReport* report,
                                              Convert convert) {
  ReadReport local;
  ReadReport& r = report != nullptr ? *report : local;
  std::vector<Record> records;
  auto note = [&](int64_t line, const std::string& field, const std::string& what,
                  const std::string& reason) -> absl::Status {
    const std::string message = absl::StrCat(path, ":", line, ": ", field.empty() ? "" : field + ": ", what);
    if (r.problems.size() < 1000) r.problems.push_back(message);
    if (options.bad_records == aln::v1::SKIP) {
      ++r.skipped;
      ++r.skip_reasons[reason];
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        absl::StrCat(message, " (set data.bad_records: skip to skip and count such records)"));
  };
  absl::Status s = for_each_row(
      path,
      [&](int64_t line, const json& row) -> absl::Status {
        if (options.limit > 0 && static_cast<int64_t>(records.size()) >= options.limit) return absl::OkStatus();
        ++r.rows;
        Record record;
        RowProblem problem;
        if (!convert(row, &record, &problem)) return note(line, problem.field, problem.what, problem.reason);
        record.origin = {path, line};
        records.push_back(std::move(record));
        ++r.records;
        return absl::OkStatus();
      },
      [&](int64_t line, const std::string& what) {
        ++r.rows;
        return note(line, "", what, "malformed row");
      });
  if (!s.ok()) return s;
  return records;
}

bool convert_preference(const json& row, aln::v1::DataFormat format, PreferencePair* p, RowProblem* problem) {
  if (format == aln::v1::DATA_FORMAT_UNSPECIFIED) format = detect_format(row);
  switch (format) {
    case aln::v1::HH_RLHF: {
      std::string chosen, rejected;
      if (!get_text(row, "chosen", false, &chosen, problem) || !get_text(row, "rejected", false, &rejected, problem)) {
        return false;
      }
      if (!split_hh_dialogue(chosen, rejected, &p->prompt, &p->chosen, &p->rejected)) {
        *problem = {"chosen", "no common prefix ending in \"\\n\\nAssistant:\" with rejected", "no HH prompt"};
        return false;
      }
      break;
    }
    case aln::v1::SAFERLHF: {
      std::string r0, r1;
      if (!get_text(row, "prompt", false, &p->prompt, problem) || !get_text(row, "response_0", false, &r0, problem) ||
          !get_text(row, "response_1", false, &r1, problem)) {
        return false;
      }
      if (!row.contains("better_response_id") || !row.at("better_response_id").is_number_integer() ||
          (row.at("better_response_id") != 0 && row.at("better_response_id") != 1)) {
        *problem = {"better_response_id", "expected 0 or 1", "bad label"};
        return false;
      }
      const int better = row.at("better_response_id").get<int>();
      p->chosen = better == 0 ? r0 : r1;
      p->rejected = better == 0 ? r1 : r0;
      auto u0 = unsafe_flag(row, "is_response_0_safe"), u1 = unsafe_flag(row, "is_response_1_safe");
      p->unsafe_chosen = better == 0 ? u0 : u1;
      p->unsafe_rejected = better == 0 ? u1 : u0;
      if (row.contains("safer_response_id") && row.at("safer_response_id").is_number_integer()) {
        p->safer_index = row.at("safer_response_id").get<int>() == better ? 0 : 1;
      }
      for (const char* key : {"response_0_harm_category", "response_1_harm_category"}) {
        if (!row.contains(key) || !row.at(key).is_object()) continue;
        for (const auto& [name, on] : row.at(key).items()) {
          if (on.is_boolean() && on.get<bool>() &&
              std::find(p->harm_categories.begin(), p->harm_categories.end(), name) == p->harm_categories.end()) {
            p->harm_categories.push_back(name);
          }
        }
      }
      break;
    }
    case aln::v1::PREFERENCE: {
      const bool conversational = row.contains("chosen") && row.at("chosen").is_array();
      if (!conversational) {
        if (!get_text(row, "prompt", false, &p->prompt, problem) ||
            !get_text(row, "chosen", false, &p->chosen, problem) ||
            !get_text(row, "rejected", false, &p->rejected, problem)) {
          return false;
        }
        break;
      }
      std::vector<Message> chosen, rejected;
      if (!row.contains("rejected") || !row.at("rejected").is_array()) {
        *problem = {"rejected", "expected a list of messages like chosen", "wrong type"};
        return false;
      }
      if (!get_messages(row, "chosen", &chosen, problem) || !get_messages(row, "rejected", &rejected, problem)) {
        return false;
      }
      if (row.contains("prompt")) {
        if (!row.at("prompt").is_array()) {
          *problem = {"prompt", "expected a list of messages", "wrong type"};
          return false;
        }
        if (!get_messages(row, "prompt", &p->prompt_messages, problem)) return false;
      } else {
        // Implicit prompt: the shared leading messages; the rest is each response.
        size_t k = 0;
        while (k + 1 < chosen.size() && k + 1 < rejected.size() && chosen[k].role == rejected[k].role &&
               chosen[k].content == rejected[k].content) {
          ++k;
        }
        p->prompt_messages.assign(chosen.begin(), chosen.begin() + static_cast<long>(k));
        chosen.erase(chosen.begin(), chosen.begin() + static_cast<long>(k));
        rejected.erase(rejected.begin(), rejected.begin() + static_cast<long>(k));
      }
      if (chosen.size() != 1 || rejected.size() != 1 || chosen[0].role != "assistant" ||
          rejected[0].role != "assistant") {
        *problem = {"chosen", "each response must be exactly one assistant message", "bad message"};
        return false;
      }
      p->chosen = chosen[0].content;
      p->rejected = rejected[0].content;
      break;
    }
    default:
      *problem = {"", "this file does not look like preference data (needs chosen/rejected or response_0/1)",
                  "not preference data"};
      return false;
  }
  for (const auto* field : {&p->chosen, &p->rejected}) {
    if (absl::StripAsciiWhitespace(*field).empty()) {
      *problem = {field == &p->chosen ? "chosen" : "rejected", "empty response", "empty response"};
      return false;
    }
    if (first_invalid_utf8(*field) >= 0) {
      *problem = {field == &p->chosen ? "chosen" : "rejected", "not valid UTF-8", "invalid UTF-8"};
      return false;
    }
  }
  if (p->chosen == p->rejected) {
    *problem = {"rejected", "identical to chosen (the pair carries no preference)", "identical responses"};
    return false;
  }
  if (row.contains("rejected_spans") && !row.at("rejected_spans").is_null()) {
    const json& spans = row.at("rejected_spans");
    if (!spans.is_array()) {
      *problem = {"rejected_spans", "expected a list of strings or [start, end] offsets", "bad spans"};
      return false;
    }
    for (const json& s : spans) {
      if (s.is_string() && !s.get<std::string>().empty() &&
          p->rejected.find(s.get<std::string>()) != std::string::npos) {
        p->rejected_spans.push_back(s.get<std::string>());
      } else if (s.is_array() && s.size() == 2 && s[0].is_number_integer() && s[1].is_number_integer() &&
                 s[0].get<int64_t>() >= 0 && s[0].get<int64_t>() < s[1].get<int64_t>() &&
                 s[1].get<int64_t>() <= static_cast<int64_t>(p->rejected.size())) {
        const auto b = static_cast<size_t>(s[0].get<int64_t>()), e = static_cast<size_t>(s[1].get<int64_t>());
        p->rejected_spans.push_back(p->rejected.substr(b, e - b));
      } else {
        *problem = {
            "rejected_spans",
            absl::StrCat("each span must be a non-empty substring of rejected or [start, end) with 0 <= start < "
                         "end <= ",
                         p->rejected.size(), " (got ", json_excerpt(s), ")"),
            "bad spans"};
        return false;
      }
    }
  }
  return true;
}

}  // namespace

bool split_hh_dialogue(const std::string& chosen, const std::string& rejected, std::string* prompt,
                       std::string* chosen_response, std::string* rejected_response) {
  size_t common = 0;
  while (common < chosen.size() && common < rejected.size() && chosen[common] == rejected[common]) ++common;
  const std::string shared = chosen.substr(0, common);
  const size_t marker = shared.rfind(kAssistantTurn);
  if (marker == std::string::npos) return false;
  const size_t end = marker + std::string(kAssistantTurn).size();
  *prompt = chosen.substr(0, end);
  *chosen_response = chosen.substr(end);
  *rejected_response = rejected.substr(end);
  return true;
}

aln::v1::DataFormat detect_format(const json& row) {
  if (row.contains("response_0") && row.contains("response_1")) return aln::v1::SAFERLHF;
  if (row.contains("chosen") && row.contains("rejected")) {
    const bool hh = !row.contains("prompt") && row.at("chosen").is_string() &&
                    absl::StartsWith(row.at("chosen").get<std::string>(), "\n\nHuman:");
    return hh ? aln::v1::HH_RLHF : aln::v1::PREFERENCE;
  }
  if (row.contains("messages") || row.contains("response") || row.contains("completion") || row.contains("text")) {
    return aln::v1::SFT_TEXT;
  }
  return aln::v1::PROMPTS;
}

absl::StatusOr<std::vector<PreferencePair>> read_preferences(const std::string& path, const ReadOptions& options,
                                                             ReadReport* report) {
  // The format is decided once per file (from its first row) so a row missing a field is reported
  // as such instead of looking like another format.
  aln::v1::DataFormat format = options.format;
  return read_rows<PreferencePair>(path, options, report, [&](const json& row, PreferencePair* p, RowProblem* problem) {
    if (format == aln::v1::DATA_FORMAT_UNSPECIFIED) format = detect_format(row);
    return convert_preference(row, format, p, problem);
  });
}

absl::StatusOr<std::vector<PromptRecord>> read_prompts(const std::string& path, const ReadOptions& options,
                                                       ReadReport* report) {
  return read_rows<PromptRecord>(path, options, report, [&](const json& row, PromptRecord* p, RowProblem* problem) {
    std::string column = options.prompt_column;
    if (column.empty()) {
      for (const char* candidate : {"prompt", "goal", "forbidden_prompt", "Behavior", "instruction"}) {
        if (row.contains(candidate)) {
          column = candidate;
          break;
        }
      }
    }
    if (column.empty()) {
      *problem = {"prompt", "no prompt column (looked for prompt, goal, forbidden_prompt, Behavior, instruction)",
                  "missing field"};
      return false;
    }
    if (!get_text(row, column, false, &p->prompt, problem)) return false;
    for (const char* key : {"category", "type", "SemanticCategory"}) {
      if (row.contains(key) && row.at(key).is_string()) {
        p->category = row.at(key).get<std::string>();
        break;
      }
    }
    return true;
  });
}

absl::StatusOr<std::vector<SftRecord>> read_sft(const std::string& path, const ReadOptions& options,
                                                ReadReport* report) {
  return read_rows<SftRecord>(path, options, report, [&](const json& row, SftRecord* r, RowProblem* problem) {
    if (row.contains("messages")) {
      if (!row.at("messages").is_array()) {
        *problem = {"messages", "expected a list of messages", "wrong type"};
        return false;
      }
      std::vector<Message> messages;
      if (!get_messages(row, "messages", &messages, problem)) return false;
      if (messages.empty() || messages.back().role != "assistant") {
        *problem = {"messages", "the last message must be the assistant's response", "bad message"};
        return false;
      }
      r->response = messages.back().content;
      messages.pop_back();
      r->prompt_messages = std::move(messages);
    } else if (row.contains("chosen") && row.contains("rejected")) {
      // Preference files double as SFT data: train on the preferred response.
      PreferencePair p;
      if (!convert_preference(row, aln::v1::DATA_FORMAT_UNSPECIFIED, &p, problem)) return false;
      r->prompt = p.prompt;
      r->prompt_messages = p.prompt_messages;
      r->response = p.chosen;
    } else if (row.contains("response_0")) {
      // SafeRLHF rows: the safe response, preferring the helpful one when both are safe.
      PreferencePair p;
      if (!convert_preference(row, aln::v1::SAFERLHF, &p, problem)) return false;
      r->prompt = p.prompt;
      if (p.unsafe_chosen.value_or(0) == 0)
        r->response = p.chosen;
      else if (p.unsafe_rejected.value_or(1) == 0)
        r->response = p.rejected;
      else {
        *problem = {"response_0", "neither response is safe; nothing to imitate", "no safe response"};
        return false;
      }
    } else {
      const char* response_key = row.contains("completion") ? "completion" : "response";
      if (!get_text(row, "prompt", true, &r->prompt, problem) ||
          !get_text(row, response_key, false, &r->response, problem)) {
        return false;
      }
    }
    if (absl::StripAsciiWhitespace(r->response).empty()) {
      *problem = {"response", "empty response", "empty response"};
      return false;
    }
    return true;
  });
}

}  // namespace aln::data
