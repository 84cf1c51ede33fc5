#pragma once
// The controllable method's control tokens, <|helpful_k|> then <|harmless_k|> for k = 0..levels-1,
// always added in this order after the tokenizer's vocabulary, so training, `aln eval` and
// `aln generate --control` give them the same ids without a new tokenizer file.
#include <algorithm>
#include <string>
#include <vector>

#include "aln/v1/job.pb.h"
#include "core/config/job_config.h"

namespace aln::trainers::controllable {

inline std::vector<std::string> control_token_names(int levels) {
  std::vector<std::string> out;
  for (const char* attribute : {"helpful", "harmless"}) {
    for (int k = 0; k < levels; ++k) out.push_back("<|" + std::string(attribute) + "_" + std::to_string(k) + "|>");
  }
  return out;
}

inline std::string control_prefix(int helpful, int harmless) {
  return "<|helpful_" + std::to_string(helpful) + "|><|harmless_" + std::to_string(harmless) + "|>";
}

// The most levels any controllable stage of the job uses (0: the job has none).
inline int job_control_levels(const aln::v1::JobSpec& spec) {
  int levels = 0;
  for (const auto& stage : config::effective_stages(spec)) {
    if (stage.trainer().has_controllable()) levels = std::max(levels, stage.trainer().controllable().levels());
  }
  return levels;
}

}  // namespace aln::trainers::controllable
