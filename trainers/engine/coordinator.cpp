#include "trainers/engine/coordinator.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/config/job_config.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/model_config.h"
#include "distributed/service.h"
#include "trainers/engine/data_share.h"
#include "trainers/engine/job_outputs.h"
#include "trainers/engine/text_encoder.h"
#include "trainers/trainer.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;

// What arrived with "put" requests since the last checkpoint or final model.
struct Received {
  std::string config_json;
  model::TensorMap tensors;
};

// Errors inside a handler become the reply's error and code (the client fails with them, naming
// this rank).
class Failed : public std::runtime_error {
 public:
  explicit Failed(const absl::Status& s) : std::runtime_error(std::string(s.message())), code_(s.code()) {}
  absl::StatusCode code() const { return code_; }

 private:
  absl::StatusCode code_;
};

void check(const absl::Status& s) {
  if (!s.ok()) throw Failed(s);
}

// A stage's examples for the policy's ranks: read with the stage's trainer's record needs and the
// job's tokenizer (made on first use, with the methods' special tokens as the policy's ranks add them).
std::string read_stage(const aln::v1::JobSpec& spec, const trainers::TrainerRegistry& registry,
                       std::unique_ptr<TextEncoder>& encoder, const Logger& log, int64_t index) {
  const auto stages = config::effective_stages(spec);
  if (index < 0 || index >= static_cast<int64_t>(stages.size())) {
    throw Failed(absl::InvalidArgumentError(absl::StrCat("no stage ", index)));
  }
  if (!encoder) {
    auto made = load_text_encoder(spec.model().tokenizer(), spec.model().chat_format());
    check(made.status());
    encoder = std::move(*made);
    if (auto extra = trainers::job_special_tokens(spec); !extra.empty()) encoder->add_special_tokens(extra);
  }
  const aln::v1::StageSpec& stage = stages[static_cast<size_t>(index)];
  auto trainer = registry.create(config::method_name(stage.trainer()), stage);
  check(trainer.status());
  absl::StatusOr<StageData> data =
      build_stage_data(stage, (*trainer)->needs().records, *encoder,
                       config::stage_seeds(spec, stage, static_cast<size_t>(index)).eval_split);
  if (data.ok()) log.info("stage %d: read %d examples; sending them to the policy", index + 1, data->train.size());
  return stage_message(data).SerializeAsString();
}

class Coordinator {
 public:
  Coordinator(const aln::v1::JobSpec& spec, const Logger& log, MetricsRegistry& metrics)
      : spec_(spec),
        log_(log),
        metrics_(metrics),
        outputs_(spec,
                 spec.checkpoint().dir().empty() ? (fs::path(spec.output_dir()) / "checkpoints").string()
                                                 : spec.checkpoint().dir(),
                 spec.metrics().progress_bar() ? ProgressStyle::kBar : ProgressStyle::kLines),
        registry_("trainer") {
    trainers::register_all(registry_);
  }

  aln::v1::ServiceReply handle(const aln::v1::ServiceRequest& request) {
    metrics_
        .counter("aln_coordinator_requests_total", "Requests the coordinator's process served, by method",
                 {{"method", request.method()}})
        .Increment();
    try {
      return serve(request);
    } catch (const Failed& failed) {
      aln::v1::ServiceReply reply;
      reply.set_error(failed.what());
      reply.set_code(static_cast<int>(failed.code()));
      return reply;
    }
  }

  std::optional<JobReport>& report() { return report_; }

 private:
  aln::v1::ServiceReply serve(const aln::v1::ServiceRequest& request) {
    aln::v1::ServiceReply reply;
    const std::string& m = request.method();
    if (m == "open") {
      check(outputs_.open(request.step()));
    } else if (m == "stage") {
      check(outputs_.stage_started(request.text(), request.total()));
    } else if (m == "train") {
      const auto& v = request.values();
      check(outputs_.train_line(request.text(), request.step(), v.size() > 0 ? v[0] : std::nan(""),
                                v.size() > 1 ? v[1] : std::nan("")));
    } else if (m == "eval") {
      check(outputs_.eval_line(request.text()));
    } else if (m == "stage_end") {
      check(outputs_.stage_finished());
    } else if (m == "data") {
      *reply.mutable_payload() = read_stage(spec_, registry_, encoder_, log_, request.step());
    } else if (m == "put") {
      put(request);
    } else if (m == "files") {
      const FileMap files = std::move(files_);
      files_.clear();
      check(outputs_.trainer_files(request.text(), [&](const std::string& dir) { return write_files(files, dir); }));
    } else if (m == "checkpoint") {
      reply.set_text(checkpoint(request));
    } else if (m == "final") {
      model::DecoderModel policy = take_model("policy");
      check(outputs_.final_model(policy, request.text()));
      log_.info("final model written to %s", request.text());
    } else if (m == "report") {
      auto report = report_from_json(request.text(), "the policy's report");
      check(report.status());
      report_ = std::move(*report);
    } else {
      throw Failed(absl::InvalidArgumentError(absl::StrCat("unknown request \"", m, "\"")));
    }
    return reply;
  }

  void put(const aln::v1::ServiceRequest& request) {
    if (request.text() == "files") {  // a piece of a file (they come in order)
      for (const auto& file : request.files()) files_[file.path()] += file.data();
      return;
    }
    Received& into = received_[request.text()];
    for (const auto& file : request.files()) {
      if (file.path() == "config.json") into.config_json = file.data();
    }
    for (const auto& named : request.named()) {
      auto tensor = dist::from_proto(named.tensor());
      if (!tensor.ok()) {
        throw Failed(absl::InvalidArgumentError(
            absl::StrCat(request.text(), " tensor ", named.name(), ": ", tensor.status().message())));
      }
      into.tensors[named.name()] = std::move(*tensor);
    }
  }

  model::DecoderModel take_model(const std::string& set) {
    auto it = received_.find(set);
    if (it == received_.end())
      throw Failed(absl::FailedPreconditionError(absl::StrCat("no ", set, " tensors arrived")));
    auto config = model::parse_hf_config(it->second.config_json, absl::StrCat(set, " config.json"));
    check(config.status());
    auto made = model::DecoderModel::from_tensors(*config, std::move(it->second.tensors));
    received_.erase(it);
    check(made.status());
    return std::move(*made);
  }

  std::string checkpoint(const aln::v1::ServiceRequest& request) {
    auto state = state_from_json(request.text(), "the checkpoint's state");
    check(state.status());
    // A fully sharded run sends no policy or optimizer: its ranks wrote their shards into the
    // checkpoint folder's staging folder, which the save moves in.
    std::optional<model::DecoderModel> policy;
    if (received_.count("policy") > 0) policy = take_model("policy");
    std::optional<model::DecoderModel> reference;
    if (received_.count("reference") > 0) reference = take_model("reference");
    const bool has_optimizer = received_.count("optimizer") > 0;
    const optim::TensorMap optimizer = std::move(received_["optimizer"].tensors);
    const model::TensorMap rng = std::move(received_["rng"].tensors);
    received_.clear();
    if (rng.count("cpu") == 0) throw Failed(absl::FailedPreconditionError("no generator state arrived"));
    const FileMap files = std::move(files_);
    files_.clear();
    CheckpointContents contents;
    contents.policy = policy ? &*policy : nullptr;
    contents.reference = reference ? &*reference : nullptr;
    contents.optimizer = has_optimizer ? &optimizer : nullptr;
    contents.shards = !policy;
    contents.rng = &rng;
    if (!files.empty()) contents.trainer_state = [&](const std::string& dir) { return write_files(files, dir); };
    auto saved = outputs_.checkpoint(contents, *state);
    check(saved.status());
    log_.debug("checkpoint %s", *saved);
    return *saved;
  }

  const aln::v1::JobSpec& spec_;
  const Logger& log_;
  MetricsRegistry& metrics_;
  LocalOutputs outputs_;
  trainers::TrainerRegistry registry_;
  std::unique_ptr<TextEncoder> encoder_;
  std::map<std::string, Received> received_;
  FileMap files_;  // pieces of the trainer's files since the last request that used them
  std::optional<JobReport> report_;
};

}  // namespace

absl::StatusOr<JobReport> run_coordinator(const aln::v1::JobSpec& spec, dist::Communicator* channel, int client,
                                          std::chrono::milliseconds timeout, const Logger& log,
                                          MetricsRegistry& metrics) {
  log.info("coordinator: world rank 0 writes the outputs for world rank %d and holds no model", client);
  Coordinator coordinator(spec, log, metrics);
  absl::Status served = dist::serve(
      channel, {client}, [&](int, const aln::v1::ServiceRequest& request) { return coordinator.handle(request); },
      timeout);
  if (!served.ok()) return served;
  if (!coordinator.report()) {
    return absl::InternalError("the policy's first rank said goodbye without a report (see its log)");
  }
  return std::move(*coordinator.report());
}

}  // namespace aln::engine
