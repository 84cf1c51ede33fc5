#pragma once
// Rollout records: what a generating method (GRPO, HAIR, the controllable method's rl objective)
// sampled and how it was scored, one record per sampled response: the unit a rollout side of the
// Buffer will hold (docs/rollouts.md, still to come). Today the engine writes them as JSON lines
// (`rollouts: {dump: true}`) for inspection (`aln data inspect`), one line per record, so a run's
// samples can be read back, compared across runs and audited for what the policy said to unsafe
// prompts.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace aln::buffer {

struct RolloutRecord {
  // Where and when: the stage, the job's optimizer step this record's loss went into (as in
  // train_log.jsonl's global_step) and the stage's step (from 1), the data-parallel rank.
  std::string stage;
  int64_t global_step = 0;
  int64_t step = 0;
  int rank = 0;
  // The policy version that sampled it (optimizer steps of the stage before sampling); lower than
  // step - 1 when the method samples with a stale snapshot (bounded staleness).
  int64_t policy_version = 0;
  // The sampling seed of the micro-batch (derived from the job's seed, the step and the prompts, so
  // the same records come out on any number of ranks) and, within it, the prompt's index (group:
  // the rows that share a prompt) and the sample's index in its group.
  uint64_t seed = 0;
  int64_t group = 0;
  int64_t sample = 0;
  std::vector<int64_t> prompt_ids;
  std::vector<int64_t> response_ids;      // as sampled, the end token included when it was sampled
  std::vector<float> sampling_logprobs;   // per response token, under the sampling distribution
  bool terminated = false;                // the response ended with the end token
  std::map<std::string, double> rewards;  // per source ("reward_rule", "reward_model_0", "shadow", ...)
  double reward = 0;                      // what the method optimised (its sources combined)
  std::string prompt_text, response_text;  // decoded (empty when no tokenizer was at hand)
  std::string source;                      // the prompt's file:line
};

// One JSON object, no newline.
std::string to_json_line(const RolloutRecord& record);
// `where` ("file:line") prefixes every error, which names the field. Non-finite rewards (written as
// null, JSON has no NaN) read back as NaN.
absl::StatusOr<RolloutRecord> parse_rollout_line(std::string_view line, const std::string& where);
// Every record of a JSON-lines file, or of every *.jsonl file below a directory (by name); a torn
// last line (a run killed while writing) is skipped and counted in `torn`.
absl::StatusOr<std::vector<RolloutRecord>> read_rollouts(const std::string& path, int64_t* torn = nullptr);
// Whether a JSON line looks like a rollout record (has policy_version and response_ids).
bool is_rollout_line(std::string_view line);

}  // namespace aln::buffer
