#pragma once
// PT-ALIGN's data pipeline with the policy's own generation (METHODS.md §2, [S + D]): from the seed
// pairs, new safety-related instructions are written by few-shot prompting, deduplicated and
// filtered; for each, a positive response is generated under a constitution and a toxic one under a
// red-team prompt; positives may be rewritten in self-critique rounds; pairs are filtered by length
// and duplication. The result is written (text and token ids) to <work_dir>/ptalign_pairs.jsonl, which
// a resumed stage reads back instead of generating again (the policy has moved by then).
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/buffer/buffer.h"
#include "trainers/trainer.h"

namespace aln::trainers {

extern const char* const kDefaultConstitution;
extern const char* const kDefaultRedTeamPrompt;

// Returns the generated pairs (seeds not included). `counters` receives what was generated, kept and
// dropped (instructions_generated, instructions_kept, dropped_duplicate, dropped_length,
// pairs_kept, dropped_short_response, dropped_identical).
absl::StatusOr<std::vector<buffer::Example>> self_generate_pairs(const std::vector<buffer::Example>& seeds,
                                                                 const PrepareContext& ctx,
                                                                 const aln::v1::PtAlignOptions& options,
                                                                 std::map<std::string, double>* counters);

// Reads what self_generate_pairs wrote (for a resumed stage).
absl::StatusOr<std::vector<buffer::Example>> read_generated_pairs(const std::string& path);

}  // namespace aln::trainers
