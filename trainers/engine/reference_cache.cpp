#include "trainers/engine/reference_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "core/fingerprint.h"
#include "core/io/safetensors.h"
#include "core/model/model_config.h"
#include "trainers/engine/fully_sharded.h"
#include "trainers/sequence_logprobs.h"

namespace aln::engine {
namespace fs = std::filesystem;
namespace {

void add_ids(Fingerprint& fp, const std::vector<int64_t>& ids) {
  fp.add(static_cast<int64_t>(ids.size()));
  fp.add(ids.data(), ids.size() * sizeof(int64_t));
}

at::Tensor column(const std::vector<buffer::Example>& set, bool chosen) {
  std::vector<double> v;
  v.reserve(set.size());
  for (const auto& e : set) v.push_back(chosen ? e.reference_chosen : e.reference_rejected);
  return at::tensor(v, at::kDouble);
}

// A fully sharded scorer: each pass is a collective, so every rank runs as many as the busiest one
// (`chunks` over the ranks, rounded up; this rank ran `passes`). The spare passes score a copy of the
// first chunk and keep nothing (the sum over ranks expects zeros for chunks a rank does not own).
void spare_passes(const model::DecoderModel& reference, const StageData& data, int64_t micro, int64_t pad_id,
                  const DataParallel& dp, int64_t chunks, int64_t passes) {
  if (reference.param_gather() == nullptr || chunks == 0) return;
  const int64_t rounds = (chunks + dp.size() - 1) / dp.size();
  const std::vector<buffer::Example>& source = data.train.empty() ? data.eval : data.train;
  std::vector<buffer::Example> spare(source.begin(),
                                     source.begin() + std::min<int64_t>(micro, static_cast<int64_t>(source.size())));
  std::vector<buffer::Example*> chunk;
  for (auto& e : spare) chunk.push_back(&e);
  for (; passes < rounds; ++passes) trainers::reference_pair_logprobs(reference, chunk, pad_id);
}

}  // namespace

std::string model_fingerprint(const model::DecoderModel& model) {
  Fingerprint fp;
  fp.add(model::to_hf_config_json(model.config()));
  auto add = [&fp](const std::string& name, const at::Tensor& tensor) {
    at::Tensor t = tensor.to(at::kCPU).contiguous();  // the bytes, read on the host (a GPU model's too)
    fp.add(name);
    fp.add(static_cast<int64_t>(t.scalar_type()));
    for (int64_t d : t.sizes()) fp.add(d);
    fp.add(t.data_ptr(), t.nbytes());
  };
  // A fully sharded model's map holds placeholders: its units are gathered one at a time (every
  // rank takes part), which gives the key the same weights have whole.
  if (const auto* sharded = dynamic_cast<const FullySharded*>(model.param_gather())) {
    sharded->for_each_whole(add);
  } else {
    for (const auto& [name, tensor] : model.tensors()) add(name, tensor);
  }
  return fp.hex();
}

std::string examples_fingerprint(const std::vector<buffer::Example>& train, const std::vector<buffer::Example>& eval) {
  Fingerprint fp;
  for (const auto* set : {&train, &eval}) {
    fp.add(static_cast<int64_t>(set->size()));
    for (const auto& e : *set) {
      add_ids(fp, e.prompt);
      add_ids(fp, e.chosen);
      add_ids(fp, e.rejected);
    }
  }
  return fp.hex();
}

std::string file_fingerprint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Fingerprint fp;
  if (!in) return fp.add(path).hex();
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fp.add(bytes).hex();
}

absl::Status save_reference_cache(const std::string& file, const std::vector<buffer::Example>& train,
                                  const std::vector<buffer::Example>& eval, const std::string& description) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(file).parent_path(), ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(file, ": cannot create its directory: ", ec.message()));
  return io::save_safetensors(file,
                              {{"train.chosen", column(train, true)},
                               {"train.rejected", column(train, false)},
                               {"eval.chosen", column(eval, true)},
                               {"eval.rejected", column(eval, false)}},
                              {{"aln.reference_cache", description}});
}

absl::Status load_reference_cache(const std::string& file, std::vector<buffer::Example>* train,
                                  std::vector<buffer::Example>* eval) {
  if (!std::filesystem::exists(file)) return absl::NotFoundError(absl::StrCat(file, ": no such reference cache"));
  auto loaded = io::load_safetensors(file);
  if (!loaded.ok()) return loaded.status();
  for (auto [prefix, set] : {std::pair{"train", train}, {"eval", eval}}) {
    for (bool chosen : {true, false}) {
      const std::string name = absl::StrCat(prefix, chosen ? ".chosen" : ".rejected");
      auto it = loaded->tensors.find(name);
      if (it == loaded->tensors.end() || it->second.scalar_type() != at::kDouble || it->second.dim() != 1 ||
          it->second.size(0) != static_cast<int64_t>(set->size())) {
        return absl::DataLossError(absl::StrCat(file, ": tensor ", name, " is missing or does not hold ", set->size(),
                                                " float64 values; delete the file to recompute it"));
      }
      const double* v = it->second.data_ptr<double>();
      for (size_t i = 0; i < set->size(); ++i) {
        (chosen ? (*set)[i].reference_chosen : (*set)[i].reference_rejected) = v[i];
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> fill_reference_logprobs(
    const aln::v1::JobSpec& spec, const aln::v1::StageSpec& stage, const model::DecoderModel& reference,
    StageData& data, int64_t micro, int64_t pad_id, const std::string& resume_key, const DataParallel& dp,
    const Logger& log, Pipeline* pipeline, const RemoteReference* remote,
    const std::function<std::optional<model::DecoderModel>()>& whole_model) {
  std::string cache_dir = stage.reference().cache_dir();
  if (cache_dir.empty()) cache_dir = (fs::path(spec.output_dir()) / "reference_cache").string();
  std::string key = resume_key;
  const std::string description = absl::StrCat(
      "tokenizer ", spec.model().tokenizer(), ", chat format ", spec.model().chat_format(), ", max_prompt_length ",
      stage.data().max_prompt_length(), ", max_response_length ", stage.data().max_response_length());
  if (key.empty()) {
    std::string weights = model_fingerprint(reference);
    if (pipeline != nullptr && pipeline->stages() > 1) {
      // Every stage's fingerprint, in stage order: the same key on every rank of the pipeline.
      std::vector<double> codes;
      for (char c : weights) codes.push_back(static_cast<unsigned char>(c));
      Fingerprint all;
      for (double c : pipeline->gather(codes)) all.add(static_cast<int64_t>(c));
      weights = all.hex();
    }
    key = Fingerprint()
              .add(weights)
              .add(examples_fingerprint(data.train, data.eval))
              .add(file_fingerprint(spec.model().tokenizer()))
              .add(description)
              .hex();
  }
  const std::string file = (fs::path(cache_dir) / (key + ".safetensors")).string();
  absl::Status loaded = load_reference_cache(file, &data.train, &data.eval);
  double found = dp.sum(loaded.ok() ? 1.0 : 0.0);
  if (pipeline != nullptr) found = pipeline->sum(found) / pipeline->stages();
  if (found == dp.size()) {
    if (remote != nullptr) skip_reference_stage(*remote);
    log.info("reference log-probs: reused %s", file);
    return key;
  }
  if (found > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        file, " is readable on ", found, " of ", dp.size(),
        " ranks; put reference.cache_dir on a file system every rank shares (or delete the file to recompute)"));
  }
  if (!resume_key.empty() || loaded.code() != absl::StatusCode::kNotFound) {
    return absl::Status(loaded.code(),
                        absl::StrCat(loaded.message(), resume_key.empty() ? "" : " (needed to resume this stage)"));
  }
  if (remote != nullptr) {
    std::optional<model::DecoderModel> whole;
    if (stage.reference().path().empty() && whole_model) whole = whole_model();
    const model::DecoderModel* weights = whole ? &*whole : &reference;
    receive_reference_logprobs(*remote, stage.reference().path().empty() ? weights : nullptr, data);
    if (dp.lead() && (pipeline == nullptr || pipeline->first())) {  // one writer per file
      absl::Status saved = save_reference_cache(file, data.train, data.eval, description);
      if (!saved.ok()) return saved;
      log.info("reference log-probs: computed on the reference ranks and cached in %s", file);
    }
    return key;
  }
  int64_t chunk_index = 0, passes = 0;
  for (auto* set : {&data.train, &data.eval}) {
    for (size_t i = 0; i < set->size(); i += static_cast<size_t>(micro), ++chunk_index) {
      if (chunk_index % dp.size() != dp.rank()) continue;
      std::vector<buffer::Example*> chunk;
      for (size_t k = i; k < std::min(set->size(), i + static_cast<size_t>(micro)); ++k) chunk.push_back(&(*set)[k]);
      if (pipeline != nullptr) {
        pipeline->forward_only(reference, [&] { trainers::reference_pair_logprobs(reference, chunk, pad_id); });
      } else {
        trainers::reference_pair_logprobs(reference, chunk, pad_id);
      }
      ++passes;
    }
  }
  spare_passes(reference, data, micro, pad_id, dp, chunk_index, passes);
  if (pipeline != nullptr && !pipeline->last()) {
    // Only the last stage computed sums; the others add zeros below.
    for (auto* set : {&data.train, &data.eval}) {
      for (auto& e : *set) e.reference_chosen = e.reference_rejected = 0.0;
    }
  }
  const bool pipelined = pipeline != nullptr && pipeline->stages() > 1;
  if (dp.size() > 1 || pipelined) {
    // Gather by summing: every rank contributes its chunks and zeros elsewhere.
    std::vector<double> values;
    for (auto* set : {&data.train, &data.eval}) {
      for (const auto& e : *set) {
        values.push_back(std::isnan(e.reference_chosen) ? 0.0 : e.reference_chosen);
        values.push_back(std::isnan(e.reference_rejected) ? 0.0 : e.reference_rejected);
      }
    }
    at::Tensor all = at::tensor(values, at::kDouble);
    dp.sum(all);
    if (pipelined) pipeline->sum(all);
    const double* v = all.data_ptr<double>();
    for (auto* set : {&data.train, &data.eval}) {
      for (auto& e : *set) {
        e.reference_chosen = *v++;
        e.reference_rejected = *v++;
      }
    }
  }
  if (dp.lead() && (pipeline == nullptr || pipeline->first())) {
    absl::Status saved = save_reference_cache(file, data.train, data.eval, description);
    if (!saved.ok()) return saved;
    log.info("reference log-probs: computed and cached in %s", file);
  }
  return key;
}

}  // namespace aln::engine
