#include "trainers/engine/checkpoint.h"

#include <unistd.h>


#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/model/hf_checkpoint.h"
#include "trainers/engine/rng_state.h"

namespace aln::engine {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "aln-checkpoint-v1";

// JSON has no NaN or infinity: a non-finite value was written as null and comes back as NaN.
MetricMap metrics_from(const json& j) {
  MetricMap out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it->is_number()) out[it.key()] = it->get<double>();
    if (it->is_null()) out[it.key()] = std::nan("");
  }
  return out;
}

json state_json(const TrainingState& s) {
  json finished = json::array();
  for (const auto& r : s.finished) {
    finished.push_back({{"stage", r.stage},
                        {"trainer", r.trainer},
                        {"steps", r.steps},
                        {"seconds", r.seconds},
                        {"before", json(r.before)},
                        {"after", json(r.after)}});
  }
  return {{"format", kFormat},
          {"global_step", s.global_step},
          {"stage_index", s.stage_index},
          {"stage_name", s.stage_name},
          {"stage_step", s.stage_step},
          {"buffer", {{"epoch", s.position.epoch}, {"offset", s.position.offset}}},
          {"consecutive_nonfinite", s.consecutive_nonfinite},
          {"data_parallel", s.data_parallel},
          {"reference_cache_key", s.reference_cache_key},
          {"spec_fingerprint", s.spec_fingerprint},
          {"stage_before", json(s.stage_before)},
          {"finished", finished}};
}

TrainingState state_from(const json& j) {
  TrainingState s;
  s.global_step = j.at("global_step").get<int64_t>();
  s.stage_index = j.at("stage_index").get<int64_t>();
  s.stage_name = j.at("stage_name").get<std::string>();
  s.stage_step = j.at("stage_step").get<int64_t>();
  s.position.epoch = j.at("buffer").at("epoch").get<int64_t>();
  s.position.offset = j.at("buffer").at("offset").get<int64_t>();
  s.consecutive_nonfinite = j.at("consecutive_nonfinite").get<int64_t>();
  s.data_parallel = j.value("data_parallel", int64_t{1});
  s.reference_cache_key = j.at("reference_cache_key").get<std::string>();
  s.spec_fingerprint = j.at("spec_fingerprint").get<std::string>();
  s.stage_before = metrics_from(j.at("stage_before"));
  for (const auto& r : j.at("finished")) {
    StageReport report;
    report.stage = r.at("stage").get<std::string>();
    report.trainer = r.at("trainer").get<std::string>();
    report.steps = r.at("steps").get<int64_t>();
    report.seconds = r.at("seconds").get<double>();
    report.before = metrics_from(r.at("before"));
    report.after = metrics_from(r.at("after"));
    s.finished.push_back(std::move(report));
  }
  return s;
}

absl::StatusOr<std::string> read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every regular file below `root` (relative path → size), the manifest itself excluded.
std::map<std::string, uintmax_t> list_files(const fs::path& root) {
  std::map<std::string, uintmax_t> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), root).generic_string();
    if (rel != "MANIFEST.json") files[rel] = entry.file_size();
  }
  return files;
}

bool parse_step_name(const std::string& name, int64_t* step) {
  if (name.rfind("step-", 0) != 0 || name.size() <= 5) return false;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  *step = std::stoll(name.substr(5));
  return true;
}

}  // namespace

std::string state_to_json(const TrainingState& state) { return state_json(state).dump(); }

absl::StatusOr<TrainingState> state_from_json(const std::string& text, const std::string& source) {
  try {
    return state_from(json::parse(text));
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(source, ": not a training state: ", e.what()));
  }
}

std::string report_to_json(const JobReport& report) {
  TrainingState stages;
  stages.finished = report.stages;
  json j = state_json(stages);
  j["final_model_dir"] = report.final_model_dir;
  j["resumed_from"] = report.resumed_from;
  return j.dump();
}

absl::StatusOr<JobReport> report_from_json(const std::string& text, const std::string& source) {
  try {
    const json j = json::parse(text);
    JobReport report;
    report.stages = state_from(j).finished;
    report.final_model_dir = j.at("final_model_dir").get<std::string>();
    report.resumed_from = j.at("resumed_from").get<std::string>();
    return report;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(source, ": not a job report: ", e.what()));
  }
}

absl::Status verify_manifest(const std::string& path) {
  auto text = read_text(fs::path(path) / "MANIFEST.json");
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(path, ": no MANIFEST.json (the checkpoint is incomplete)"));
  json manifest = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object() || manifest.value("format", "") != kFormat ||
      !manifest.contains("files") || !manifest["files"].is_object()) {
    return absl::DataLossError(absl::StrCat(path, "/MANIFEST.json: not an ", kFormat, " manifest"));
  }
  for (auto it = manifest["files"].begin(); it != manifest["files"].end(); ++it) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(fs::path(path) / it.key(), ec);
    if (ec) return absl::DataLossError(absl::StrCat(path, ": ", it.key(), " is listed in MANIFEST.json but missing"));
    if (!it->is_number_unsigned() || size != it->get<uintmax_t>()) {
      return absl::DataLossError(
          absl::StrCat(path, ": ", it.key(), " has ", size, " bytes, MANIFEST.json says ", it->dump()));
    }
  }
  return absl::OkStatus();
}

std::string CheckpointManager::staging_shards(int64_t global_step) const {
  std::error_code ec;
  const fs::path path = fs::path(dir_) / absl::StrFormat(".step-%08d.shards", global_step);
  const fs::path absolute = fs::absolute(path, ec);
  return (ec ? path : absolute).lexically_normal().string();
}

absl::Status CheckpointManager::prepare_staging(int64_t global_step) const {
  const std::string staging = staging_shards(global_step);
  std::error_code ec;
  fs::remove_all(staging, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(staging, ": cannot empty: ", ec.message()));
  fs::create_directories(staging, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(staging, ": cannot create: ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> CheckpointManager::save(const CheckpointContents& contents,
                                                    const TrainingState& state) const {
  const std::string name = absl::StrFormat("step-%08d", state.global_step);
  const fs::path final_dir = fs::path(dir_) / name;
  const fs::path tmp = fs::path(dir_) / absl::StrCat(".", name, ".tmp-", ::getpid());
  const fs::path staging = contents.shards ? fs::path(staging_shards(state.global_step)) : fs::path();
  std::error_code ec;
  if (contents.shards && !fs::is_directory(staging, ec)) {
    // The ranks wrote into their checkpoint folder; this process's is elsewhere (a coordinator in
    // another working directory, or without the file system the ranks share).
    return absl::FailedPreconditionError(
        absl::StrCat("the policy ranks' checkpoint shards are not in ", staging.string(),
                     ": set checkpoint.dir (or output_dir) to an absolute path on a file system every rank shares"));
  }
  fs::create_directories(dir_, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat(dir_, ": cannot create the checkpoint directory: ", ec.message()));
  // Temporary directories (and shard staging folders) of a run that died while saving: only one
  // job writes checkpoints into a directory, so any left over are garbage.
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string n = entry.path().filename().string();
    const bool temporary = n.find(".tmp-") != std::string::npos;
    const bool staged = n.size() > 7 && n.compare(n.size() - 7, 7, ".shards") == 0 &&
                        entry.path().filename() != staging.filename();  // (not the one being moved in)
    const bool leftover = n.rfind(".step-", 0) == 0 && (temporary || staged);
    if (leftover) fs::remove_all(entry.path(), ec);
  }
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(tmp.string(), ": cannot create: ", ec.message()));
  auto fail = [&](absl::Status s) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return absl::Status(s.code(), absl::StrCat("checkpoint ", name, ": ", s.message()));
  };
  absl::Status s = absl::OkStatus();
  if (contents.policy != nullptr) s = model::save_hf_model(*contents.policy, (tmp / "model").string());
  if (s.ok() && contents.reference != nullptr) {
    s = model::save_hf_model(*contents.reference, (tmp / "reference").string());
  }
  if (s.ok() && contents.optimizer != nullptr) {
    s = io::save_safetensors((tmp / "optimizer.safetensors").string(),
                             io::NamedTensors(contents.optimizer->begin(), contents.optimizer->end()));
  }
  if (s.ok() && !staging.empty()) {
    // The ranks' shards, written and fsync'ed there: moved in whole.
    fs::rename(staging, tmp / kShardsFolder, ec);
    if (ec)
      s = absl::InternalError(
          absl::StrCat("cannot move ", staging.string(), " into ", tmp.string(), ": ", ec.message()));
  }
  if (s.ok() && contents.policy == nullptr && !contents.shards) {
    s = absl::InternalError("neither the policy nor its shards were given");
  }
  if (s.ok()) {
    const model::TensorMap states = contents.rng != nullptr ? *contents.rng : rng_states();
    s = io::save_safetensors((tmp / "rng.safetensors").string(), io::NamedTensors(states.begin(), states.end()));
  }
  if (s.ok() && contents.trainer_state) {
    fs::create_directories(tmp / "trainer", ec);
    s = ec ? absl::InternalError(absl::StrCat("cannot create ", (tmp / "trainer").string(), ": ", ec.message()))
           : contents.trainer_state((tmp / "trainer").string());
  }
  if (s.ok()) s = io::write_text_atomically((tmp / "state.json").string(), state_json(state).dump(2) + "\n");
  if (!s.ok()) return fail(s);
  json files = json::object();
  for (const auto& [rel, size] : list_files(tmp)) files[rel] = size;
  json manifest = {{"format", kFormat}, {"global_step", state.global_step}, {"files", files}};
  s = io::write_text_atomically((tmp / "MANIFEST.json").string(), manifest.dump(2) + "\n");
  if (s.ok()) s = io::sync_directory(tmp.string());
  if (!s.ok()) return fail(s);
  // A checkpoint of the same step exists only when an earlier run got this far and was resumed
  // from an older one: the new one replaces it.
  if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) return fail(absl::InternalError(absl::StrCat("cannot rename ", tmp.string(), ": ", ec.message())));
  s = io::sync_directory(dir_);
  if (!s.ok()) return s;

  auto all = complete(nullptr);
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < all.size(); ++i) fs::remove_all(all[i].second, ec);
  return final_dir.string();
}

std::vector<std::pair<int64_t, std::string>> CheckpointManager::complete(const Logger* log) const {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    int64_t step = 0;
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !parse_step_name(name, &step)) continue;
    absl::Status ok = verify_manifest(entry.path().string());
    if (!ok.ok()) {
      if (log != nullptr) log->warning("skipping checkpoint %s: %s", entry.path().string(), ok.message());
      continue;
    }
    out.emplace_back(step, entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> CheckpointManager::latest(const Logger& log) const {
  auto all = complete(&log);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

absl::StatusOr<model::DecoderModel> CheckpointManager::load_policy(const std::string& path) {
  const fs::path dir(path);
  if (!fs::exists(dir / kShardsFolder)) return model::load_hf_model((dir / "model").string());
  auto index = load_shard_index((dir / kShardsFolder).string());
  if (!index.ok()) return index.status();
  return read_shard_policy(*index);
}

absl::StatusOr<LoadedCheckpoint> CheckpointManager::load(const std::string& path, bool with_policy,
                                                         bool whole_optimizer) {
  absl::Status ok = verify_manifest(path);
  if (!ok.ok()) return ok;
  const fs::path dir(path);
  auto text = read_text(dir / "state.json");
  if (!text.ok()) return text.status();
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || j.value("format", "") != kFormat) {
    return absl::DataLossError(absl::StrCat(path, "/state.json: not an ", kFormat, " state file"));
  }
  absl::StatusOr<TrainingState> state = absl::UnknownError("unset");
  try {
    state = state_from(j);
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, "/state.json: ", e.what()));
  }
  std::optional<model::DecoderModel> policy;
  if (with_policy) {
    auto loaded = load_policy(path);
    if (!loaded.ok()) return loaded.status();
    policy = std::move(*loaded);
  }
  // A fully sharded run's moments stay in its shards until the resuming ranks read what each needs.
  optim::TensorMap optimizer;
  std::optional<ShardIndex> shards;
  if (fs::exists(dir / kShardsFolder)) {
    auto index = load_shard_index((dir / kShardsFolder).string());
    if (!index.ok()) return index.status();
    shards = std::move(*index);
  } else if (whole_optimizer) {
    auto loaded = io::load_safetensors((dir / "optimizer.safetensors").string());
    if (!loaded.ok()) return loaded.status();
    optimizer = std::move(loaded->tensors);
  } else {
    auto header = io::read_safetensors_header((dir / "optimizer.safetensors").string());  // checked now
    if (!header.ok()) return header.status();
  }
  // (Set when this run reads only its slices of the moments.)
  std::string optimizer_file = !whole_optimizer && !shards ? (dir / "optimizer.safetensors").string() : "";
  LoadedCheckpoint out{path,
                       {},
                       std::move(policy),
                       "",
                       std::move(optimizer),
                       std::move(*state),
                       std::move(shards),
                       std::move(optimizer_file)};
  if (fs::exists(dir / "reference")) out.reference_dir = (dir / "reference").string();
  auto rng = io::load_safetensors((dir / "rng.safetensors").string());
  if (!rng.ok()) return rng.status();
  if (rng->tensors.count("cpu") == 0)
    return absl::DataLossError(absl::StrCat(path, "/rng.safetensors: no 'cpu' tensor"));
  out.rng = std::move(rng->tensors);
  return out;
}

}  // namespace aln::engine
