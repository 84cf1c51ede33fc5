#pragma once
// What a job writes: train_log.jsonl and eval.jsonl, the progress display, checkpoints, a trainer's
// files, the final model and the report. The coordinator writes them. With parallel.coordinator:
// with_policy that is world rank 0, the policy's first rank (LocalOutputs). With own_rank the
// policy's first rank sends everything to the coordinator's process (RemoteOutputs), which writes it
// with a LocalOutputs of its own (coordinator.h). The other ranks have no outputs.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/model/decoder.h"
#include "core/optim/optimizer.h"
#include "distributed/communicator.h"
#include "distributed/service.h"
#include "trainers/engine/checkpoint.h"
#include "trainers/engine/examples.h"
#include "trainers/engine/progress.h"
#include "trainers/engine/report.h"
#include "trainers/engine/run_log.h"

namespace aln::engine {

// Fills a directory (a trainer's state or its end-of-stage files).
using WriteDir = std::function<absl::Status(const std::string& dir)>;

class JobOutputs {
 public:
  virtual ~JobOutputs() = default;
  // Opens the logs, dropping lines past `resumed_step` (a resumed run redoes those steps; -1 keeps all).
  virtual absl::Status open(int64_t resumed_step) = 0;
  virtual absl::Status stage_started(const std::string& stage, int64_t total_steps) = 0;
  // One optimizer step's line of train_log.jsonl (a JSON object), and what the progress display shows
  // of it: the stage's step (counted from 1), its loss (NaN for a skipped step) and throughput.
  virtual absl::Status train_line(const std::string& line, int64_t step, double loss, double tokens_per_second) = 0;
  virtual absl::Status eval_line(const std::string& line) = 0;
  virtual absl::Status stage_finished() = 0;
  // `write` fills output_dir/<relative_dir>.
  virtual absl::Status trainer_files(const std::string& relative_dir, const WriteDir& write) = 0;
  // Returns the checkpoint's path. (`contents.trainer_state` writes the trainer's own files.)
  virtual absl::StatusOr<std::string> checkpoint(const CheckpointContents& contents, const TrainingState& state) = 0;
  virtual absl::Status final_model(const model::DecoderModel& policy, const std::string& dir) = 0;
  // The job's outcome (the coordinator's process returns it to the CLI, which prints it).
  virtual absl::Status report(const JobReport& report) = 0;
};

// Writes here.
class LocalOutputs : public JobOutputs {
 public:
  LocalOutputs(const aln::v1::JobSpec& spec, std::string checkpoint_dir, ProgressStyle style);
  absl::Status open(int64_t resumed_step) override;
  absl::Status stage_started(const std::string& stage, int64_t total_steps) override;
  absl::Status train_line(const std::string& line, int64_t step, double loss, double tokens_per_second) override;
  absl::Status eval_line(const std::string& line) override;
  absl::Status stage_finished() override;
  absl::Status trainer_files(const std::string& relative_dir, const WriteDir& write) override;
  // (contents.rng: the generator state of the process that trains; this one's when null.)
  absl::StatusOr<std::string> checkpoint(const CheckpointContents& contents, const TrainingState& state) override;
  absl::Status final_model(const model::DecoderModel& policy, const std::string& dir) override;
  absl::Status report(const JobReport&) override { return absl::OkStatus(); }
  const std::string& output_dir() const { return output_dir_; }

 private:
  std::string output_dir_;
  CheckpointManager checkpoints_;
  ProgressStyle style_;
  std::optional<JsonlLog> train_log_, eval_log_;
  std::optional<Progress> progress_;
};

// Sends to the coordinator's process: `server` is its rank in `channel`; each request waits
// `timeout`, a checkpoint or the final model `long_wait` (the coordinator writes it meanwhile).
class RemoteOutputs : public JobOutputs {
 public:
  RemoteOutputs(dist::Communicator* channel, int server, std::chrono::milliseconds timeout,
                std::chrono::milliseconds long_wait)
      : client_(channel, server), timeout_(timeout), long_wait_(long_wait) {}
  absl::Status open(int64_t resumed_step) override;
  absl::Status stage_started(const std::string& stage, int64_t total_steps) override;
  absl::Status train_line(const std::string& line, int64_t step, double loss, double tokens_per_second) override;
  absl::Status eval_line(const std::string& line) override;
  absl::Status stage_finished() override;
  absl::Status trainer_files(const std::string& relative_dir, const WriteDir& write) override;
  absl::StatusOr<std::string> checkpoint(const CheckpointContents& contents, const TrainingState& state) override;
  absl::Status final_model(const model::DecoderModel& policy, const std::string& dir) override;
  // Also the last request: the coordinator's process stops serving after it.
  absl::Status report(const JobReport& report) override;
  // The stage's examples, read by the coordinator's process (parallel.data_reader: lead).
  absl::StatusOr<StageData> stage_data(int64_t stage);

 private:
  absl::StatusOr<aln::v1::ServiceReply> call(const aln::v1::ServiceRequest& request, std::chrono::milliseconds timeout);
  absl::Status simple(const std::string& method, const std::string& text, int64_t step = 0, int64_t total = 0);
  // A model's (or the optimizer's) tensors, and the files `write` puts in a directory, in messages
  // of at most 256 MiB each; the coordinator keeps them until the request that uses them.
  absl::Status put(const std::string& set, const optim::TensorMap& tensors, const std::string& config_json);
  absl::Status put_files(const WriteDir& write);
  dist::ServiceClient client_;
  std::chrono::milliseconds timeout_, long_wait_;
};

// Files by relative path.
using FileMap = std::map<std::string, std::string>;

// Calls `chunk(relative path, bytes)` for each regular file below `dir`, in pieces of at most
// `max_bytes` (a file's pieces in order; an empty file is one empty piece).
absl::Status read_file_chunks(const std::string& dir, size_t max_bytes,
                              const std::function<absl::Status(const std::string&, std::string)>& chunk);
// Writes `files` below `dir`; refuses absolute paths and ones that climb out of `dir`.
absl::Status write_files(const FileMap& files, const std::string& dir);

}  // namespace aln::engine
