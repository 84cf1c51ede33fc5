#include "trainers/engine/job_outputs.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/io/atomic_file.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/model_config.h"
#include "trainers/engine/data_share.h"
#include "trainers/engine/rng_state.h"
#include "trainers/engine/tensor_pieces.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;

// A temporary directory removed with its contents when this goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "aln-outputs-XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

absl::Status read_file_chunks(const std::string& dir, size_t max_bytes,
                              const std::function<absl::Status(const std::string&, std::string)>& chunk) {
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(entry.path().string(), ": cannot open"));
    const std::string rel = entry.path().lexically_relative(dir).generic_string();
    const size_t size = static_cast<size_t>(entry.file_size());
    size_t offset = 0;
    do {
      std::string bytes(std::min(max_bytes, size - offset), '\0');
      in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (static_cast<size_t>(in.gcount()) != bytes.size()) {
        return absl::DataLossError(absl::StrCat(entry.path().string(), ": short read"));
      }
      offset += bytes.size();
      absl::Status sent = chunk(rel, std::move(bytes));
      if (!sent.ok()) return sent;
    } while (offset < size);
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  return absl::OkStatus();
}

absl::Status write_files(const FileMap& files, const std::string& dir) {
  for (const auto& [name, data] : files) {
    const fs::path rel = fs::path(name).lexically_normal();
    if (rel.empty() || rel.is_absolute() || *rel.begin() == "..") {
      return absl::InvalidArgumentError(absl::StrCat("file path '", name, "' is not below ", dir));
    }
    const fs::path path = fs::path(dir) / rel;
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat(path.parent_path().string(), ": ", ec.message()));
    absl::Status written = io::write_text_atomically(path.string(), data);
    if (!written.ok()) return written;
  }
  return absl::OkStatus();
}

// --- LocalOutputs ---------------------------------------------------------------------------

LocalOutputs::LocalOutputs(const aln::v1::JobSpec& spec, std::string checkpoint_dir, ProgressStyle style)
    : output_dir_(spec.output_dir()),
      checkpoints_(std::move(checkpoint_dir), spec.checkpoint().keep_last()),
      style_(style) {}

absl::Status LocalOutputs::open(int64_t resumed_step) {
  auto opened = JsonlLog::open((fs::path(output_dir_) / "train_log.jsonl").string(), resumed_step);
  if (!opened.ok()) return opened.status();
  train_log_.emplace(std::move(*opened));
  opened = JsonlLog::open((fs::path(output_dir_) / "eval.jsonl").string(), resumed_step);
  if (!opened.ok()) return opened.status();
  eval_log_.emplace(std::move(*opened));
  return absl::OkStatus();
}

absl::Status LocalOutputs::stage_started(const std::string& stage, int64_t total_steps) {
  progress_.emplace(stage, total_steps, style_);
  return absl::OkStatus();
}

absl::Status LocalOutputs::train_line(const std::string& line, int64_t step, double loss, double tokens_per_second) {
  if (!train_log_) return absl::FailedPreconditionError("the train log is not open");
  absl::Status appended = train_log_->append(line);
  if (!appended.ok()) return appended;
  if (progress_) progress_->update(step, loss, tokens_per_second);
  return absl::OkStatus();
}

absl::Status LocalOutputs::eval_line(const std::string& line) {
  if (!eval_log_) return absl::FailedPreconditionError("the eval log is not open");
  return eval_log_->append(line);
}

absl::Status LocalOutputs::stage_finished() {
  if (progress_) progress_->finish();
  progress_.reset();
  return absl::OkStatus();
}

absl::Status LocalOutputs::trainer_files(const std::string& relative_dir, const WriteDir& write) {
  return write((fs::path(output_dir_) / relative_dir).string());
}

absl::StatusOr<std::string> LocalOutputs::checkpoint(const CheckpointContents& contents, const TrainingState& state) {
  return checkpoints_.save(contents, state);
}

absl::Status LocalOutputs::final_model(const model::DecoderModel& policy, const std::string& dir) {
  return model::save_hf_model(policy, dir);
}

// --- RemoteOutputs --------------------------------------------------------------------------

absl::StatusOr<aln::v1::ServiceReply> RemoteOutputs::call(const aln::v1::ServiceRequest& request,
                                                          std::chrono::milliseconds timeout) {
  auto reply = client_.call(request, timeout);
  if (!reply.ok()) {
    return absl::Status(reply.status().code(), absl::StrCat("the coordinator (world rank 0), request \"",
                                                            request.method(), "\": ", reply.status().message()));
  }
  return reply;
}

absl::Status RemoteOutputs::simple(const std::string& method, const std::string& text, int64_t step, int64_t total) {
  aln::v1::ServiceRequest request;
  request.set_method(method);
  request.set_text(text);
  request.set_step(step);
  request.set_total(total);
  return call(request, timeout_).status();
}

absl::Status RemoteOutputs::open(int64_t resumed_step) { return simple("open", "", resumed_step); }

absl::Status RemoteOutputs::stage_started(const std::string& stage, int64_t total_steps) {
  return simple("stage", stage, 0, total_steps);
}

absl::Status RemoteOutputs::train_line(const std::string& line, int64_t step, double loss, double tokens_per_second) {
  aln::v1::ServiceRequest request;
  request.set_method("train");
  request.set_text(line);
  request.set_step(step);
  request.add_values(loss);
  request.add_values(tokens_per_second);
  return call(request, timeout_).status();
}
absl::Status RemoteOutputs::eval_line(const std::string& line) { return simple("eval", line); }
absl::Status RemoteOutputs::stage_finished() { return simple("stage_end", ""); }

absl::Status RemoteOutputs::put_files(const WriteDir& write) {
  TempDir tmp;
  if (tmp.path().empty()) {
    return absl::InternalError(absl::StrCat("cannot create a temporary directory in ",
                                            fs::temp_directory_path().string(), " (set TMPDIR to one with room)"));
  }
  absl::Status written = write(tmp.path());
  if (!written.ok()) return written;
  return read_file_chunks(tmp.path(), kPieceBytes, [&](const std::string& path, std::string bytes) {
    aln::v1::ServiceRequest request;
    request.set_method("put");
    request.set_text("files");
    aln::v1::FileData* file = request.add_files();
    file->set_path(path);
    file->set_data(std::move(bytes));
    return call(request, long_wait_).status();
  });
}

absl::Status RemoteOutputs::trainer_files(const std::string& relative_dir, const WriteDir& write) {
  absl::Status sent = put_files(write);
  if (!sent.ok()) return sent;
  return simple("files", relative_dir);
}

absl::Status RemoteOutputs::put(const std::string& set, const optim::TensorMap& tensors,
                                const std::string& config_json) {
  return send_named_tensors(
      tensors, config_json,
      [&](aln::v1::ServiceRequest& request) {
        request.set_method("put");
        request.set_text(set);
      },
      [&](const aln::v1::ServiceRequest& request) { return call(request, long_wait_).status(); }, set,
      "use parallel.coordinator: with_policy");
}

absl::StatusOr<std::string> RemoteOutputs::checkpoint(const CheckpointContents& contents, const TrainingState& state) {
  absl::Status sent = absl::OkStatus();
  if (contents.policy != nullptr) {
    sent = put("policy", contents.policy->tensors(), model::to_hf_config_json(contents.policy->config()));
  }
  if (sent.ok() && contents.reference != nullptr) {
    sent = put("reference", contents.reference->tensors(), model::to_hf_config_json(contents.reference->config()));
  }
  if (sent.ok() && contents.optimizer != nullptr) sent = put("optimizer", *contents.optimizer, "");
  if (sent.ok()) sent = put("rng", contents.rng != nullptr ? *contents.rng : rng_states(), "");
  if (!sent.ok()) return sent;
  if (contents.trainer_state) {
    sent = put_files(contents.trainer_state);
    if (!sent.ok()) return sent;
  }
  aln::v1::ServiceRequest request;
  request.set_method("checkpoint");
  request.set_text(state_to_json(state));
  auto reply = call(request, long_wait_);
  if (!reply.ok()) return reply.status();
  return reply->text();
}

absl::Status RemoteOutputs::final_model(const model::DecoderModel& policy, const std::string& dir) {
  absl::Status sent = put("policy", policy.tensors(), model::to_hf_config_json(policy.config()));
  if (!sent.ok()) return sent;
  aln::v1::ServiceRequest request;
  request.set_method("final");
  request.set_text(dir);
  return call(request, long_wait_).status();
}

absl::Status RemoteOutputs::report(const JobReport& report) {
  absl::Status sent = simple("report", report_to_json(report));
  if (!sent.ok()) return sent;
  return client_.goodbye(timeout_);
}

absl::StatusOr<StageData> RemoteOutputs::stage_data(int64_t stage) {
  aln::v1::ServiceRequest request;
  request.set_method("data");
  request.set_step(stage);
  auto reply = call(request, long_wait_);
  if (!reply.ok()) return reply.status();
  aln::v1::StageExamples message;
  if (!message.ParseFromString(reply->payload())) {
    return absl::DataLossError(
        absl::StrCat("the stage's examples from the coordinator (", reply->payload().size(), " bytes) do not parse"));
  }
  return stage_from_message(message, "the coordinator (world rank 0)");
}

}  // namespace aln::engine
