#include "core/buffer/rollout_record.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "core/json_guard.h"

namespace aln::buffer {
namespace {

using json = nlohmann::json;

// Reads key `k` of `j` as T, or says which field is missing or of the wrong type.
template <typename T>
absl::Status field(const json& j, const char* k, const std::string& where, T* out, bool required = true) {
  auto it = j.find(k);
  if (it == j.end()) {
    return required ? absl::InvalidArgumentError(absl::StrCat(where, ": field '", k, "' is missing"))
                    : absl::OkStatus();
  }
  try {
    if constexpr (std::is_same_v<T, double>) {
      if (it->is_null()) {  // a NaN or infinity is written as null
        *out = std::numeric_limits<double>::quiet_NaN();
        return absl::OkStatus();
      }
    }
    if constexpr (std::is_same_v<T, std::map<std::string, double>>) {
      if (it->is_object()) {
        out->clear();
        for (const auto& [k, v] : it->items()) {
          (*out)[k] = v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.template get<double>();
        }
        return absl::OkStatus();
      }
    }
    *out = it->get<T>();
  } catch (const json::exception&) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field '", k, "' has the wrong type (", it->type_name(),
                                                   ")"));
  }
  return absl::OkStatus();
}

// A torn line does not parse at all (a record that parses but lacks fields is not torn).
bool is_complete_json(const std::string& line) {
  json j;
  return parse_untrusted_json(line, &j).ok();
}

}  // namespace

std::string to_json_line(const RolloutRecord& r) {
  json j = {{"stage", r.stage},
            {"global_step", r.global_step},
            {"step", r.step},
            {"rank", r.rank},
            {"policy_version", r.policy_version},
            {"seed", r.seed},
            {"group", r.group},
            {"sample", r.sample},
            {"prompt_ids", r.prompt_ids},
            {"response_ids", r.response_ids},
            {"sampling_logprobs", r.sampling_logprobs},
            {"terminated", r.terminated},
            {"rewards", r.rewards},
            {"reward", r.reward},
            {"prompt", r.prompt_text},
            {"response", r.response_text},
            {"source", r.source}};
  // Decoded text may hold bytes that are not UTF-8 (a token split mid-character): replaced, not fatal.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool is_rollout_line(std::string_view line) {
  json j;
  return parse_untrusted_json(line, &j).ok() && j.is_object() && j.contains("policy_version") &&
         j.contains("response_ids");
}

absl::StatusOr<RolloutRecord> parse_rollout_line(std::string_view line, const std::string& where) {
  json j;
  if (!parse_untrusted_json(line, &j).ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  RolloutRecord r;
  for (absl::Status s : {field(j, "stage", where, &r.stage), field(j, "global_step", where, &r.global_step),
                         field(j, "step", where, &r.step), field(j, "rank", where, &r.rank),
                         field(j, "policy_version", where, &r.policy_version), field(j, "seed", where, &r.seed),
                         field(j, "group", where, &r.group), field(j, "sample", where, &r.sample),
                         field(j, "prompt_ids", where, &r.prompt_ids), field(j, "response_ids", where, &r.response_ids),
                         field(j, "sampling_logprobs", where, &r.sampling_logprobs),
                         field(j, "terminated", where, &r.terminated), field(j, "rewards", where, &r.rewards),
                         field(j, "reward", where, &r.reward), field(j, "prompt", where, &r.prompt_text, false),
                         field(j, "response", where, &r.response_text, false),
                         field(j, "source", where, &r.source, false)}) {
    if (!s.ok()) return s;
  }
  if (r.sampling_logprobs.size() != r.response_ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field 'sampling_logprobs' has ",
                                                   r.sampling_logprobs.size(), " values for ", r.response_ids.size(),
                                                   " response_ids (one per sampled token)"));
  }
  if (r.policy_version < 0 || r.step < 1 || r.policy_version >= r.step) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field 'policy_version' is ", r.policy_version,
                                                   " at step ", r.step, " (a record is sampled before its step)"));
  }
  return r;
}

absl::StatusOr<std::vector<RolloutRecord>> read_rollouts(const std::string& path, int64_t* torn) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(path, ec)) {
      if (e.is_regular_file() && e.path().extension() == ".jsonl") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) return absl::NotFoundError(absl::StrCat(path, ": no .jsonl files below it"));
  } else {
    files.push_back(path);
  }
  std::vector<RolloutRecord> out;
  for (const auto& file : files) {
    std::ifstream in(file);
    if (!in) return absl::NotFoundError(absl::StrCat(file, ": cannot open"));
    std::string line, next;
    int64_t number = 0;
    bool have = static_cast<bool>(std::getline(in, line));
    while (have) {
      ++number;
      const bool last = !std::getline(in, next);
      if (!line.empty()) {
        auto r = parse_rollout_line(line, absl::StrCat(file, ":", number));
        if (r.ok()) {
          out.push_back(std::move(*r));
        } else if (last && !is_complete_json(line)) {
          if (torn != nullptr) ++*torn;  // the writer died mid-line
        } else {
          return r.status();
        }
      }
      line.swap(next);
      have = !last;
    }
  }
  return out;
}

}  // namespace aln::buffer
