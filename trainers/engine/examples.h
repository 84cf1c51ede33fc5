#pragma once
// Stage data: reads every source of a stage, renders prompts in the chat format, tokenises,
// truncates (keep the end of the prompt, cap the response) and splits off the evaluation set.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/buffer/buffer.h"
#include "core/data/readers.h"
#include "trainers/engine/text_encoder.h"
#include "trainers/trainer.h"

namespace aln::engine {

struct StageData {
  std::vector<buffer::Example> train;
  std::vector<buffer::Example> eval;
  int64_t rows = 0;
  int64_t skipped = 0;
  int64_t truncated = 0;
  std::vector<std::string> problems;
};

absl::StatusOr<StageData> build_stage_data(const aln::v1::StageSpec& stage, trainers::RecordKind kind,
                                           const TextEncoder& encoder, uint64_t seed);

}  // namespace aln::engine
