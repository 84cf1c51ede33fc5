#pragma once
// Data readers: files -> records, for every format in DataFormat (proto/aln/v1/job.proto):
// TRL-style preferences (text or messages, explicit or implicit prompt), Anthropic HH-RLHF dialogues,
// the PKU-SafeRLHF schema (XSTest pairs use it), prompt lists and SFT data.
// Problems name file, line and field. With BadRecordPolicy SKIP they are counted instead.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/data/records.h"
#include <nlohmann/json.hpp>

namespace aln::data {

struct ReadReport {
  int64_t rows = 0;      // rows seen in the file
  int64_t records = 0;   // records produced
  int64_t skipped = 0;   // rows skipped under SKIP
  std::vector<std::string> problems;  // "file:line: field: what" (first 1000)
  std::map<std::string, int64_t> skip_reasons;
};

struct ReadOptions {
  aln::v1::DataFormat format = aln::v1::DATA_FORMAT_UNSPECIFIED;  // unspecified: detect from the first row
  aln::v1::BadRecordPolicy bad_records = aln::v1::FAIL;
  int64_t limit = 0;                // 0 = all
  std::string prompt_column;        // prompt lists: column to read ("" = first of prompt, goal, forbidden_prompt, Behavior)
};

absl::StatusOr<std::vector<PreferencePair>> read_preferences(const std::string& path, const ReadOptions& options,
                                                             ReadReport* report);
absl::StatusOr<std::vector<PromptRecord>> read_prompts(const std::string& path, const ReadOptions& options,
                                                       ReadReport* report);
absl::StatusOr<std::vector<SftRecord>> read_sft(const std::string& path, const ReadOptions& options,
                                                ReadReport* report);

// HH-RLHF: the longest common prefix of the two dialogues that ends in "\n\nAssistant:".
// Returns false when there is none.
bool split_hh_dialogue(const std::string& chosen, const std::string& rejected, std::string* prompt,
                       std::string* chosen_response, std::string* rejected_response);

// The format a row looks like (PREFERENCE, HH_RLHF, SAFERLHF, PROMPTS or SFT_TEXT).
aln::v1::DataFormat detect_format(const nlohmann::json& row);

}  // namespace aln::data
