#pragma once
// Reference log-probs computed once and kept on disk, so later runs of the same stage (and a resumed
// run, whose policy is no longer the reference) reuse them instead of running the reference model.
// The key covers everything the numbers depend on: the reference model's weights and config, the
// tokenised examples (which already reflect data, tokenizer, chat format and truncation) and, for
// readability of the cache directory, the tokenizer file and truncation settings again.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/buffer/buffer.h"
#include "core/logging.h"
#include "core/model/decoder.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/examples.h"
#include "trainers/engine/pipeline.h"
#include "trainers/engine/reference_role.h"

namespace aln::engine {

std::string model_fingerprint(const model::DecoderModel& model);
std::string examples_fingerprint(const std::vector<buffer::Example>& train, const std::vector<buffer::Example>& eval);
// Of a file's bytes (the tokenizer); of the path itself when the file cannot be read.
std::string file_fingerprint(const std::string& path);

// Reference sums of every example, stored as float64 tensors train.chosen, train.rejected,
// eval.chosen, eval.rejected in `<dir>/<key>.safetensors` (written atomically).
absl::Status save_reference_cache(const std::string& file, const std::vector<buffer::Example>& train,
                                  const std::vector<buffer::Example>& eval, const std::string& description);
// Fills the examples' reference sums. NotFound when there is no such file; DataLoss when its sizes
// do not match the examples.
absl::Status load_reference_cache(const std::string& file, std::vector<buffer::Example>* train,
                                  std::vector<buffer::Example>* eval);

// Fills the examples' reference sums for a stage: from the cache file named by the key (`resume_key`
// when resuming, else computed from `reference` and the data), else by running `reference` over
// them (chunks dealt round-robin over the data-parallel ranks) and writing the cache from rank 0.
// Returns the key. With `pipeline`, `reference` is this rank's stage of the reference: the passes
// run through the stages, the key covers every stage's weights, and all stages get the sums. With
// `remote` (placement: separate) the reference ranks compute them; `reference` then only names the
// weights (sent to them when the stage's reference is the policy, i.e. reference.path is empty;
// with `whole_model` set, what it returns on world rank 0 is sent instead: a pipelined policy's whole
// model, which it gathers from the stages; every policy rank calls it, only when weights are sent).
absl::StatusOr<std::string> fill_reference_logprobs(
    const aln::v1::JobSpec& spec, const aln::v1::StageSpec& stage, const model::DecoderModel& reference,
    StageData& data, int64_t micro, int64_t pad_id, const std::string& resume_key, const DataParallel& dp,
    const Logger& log, Pipeline* pipeline = nullptr, const RemoteReference* remote = nullptr,
    const std::function<std::optional<model::DecoderModel>()>& whole_model = {});

}  // namespace aln::engine
