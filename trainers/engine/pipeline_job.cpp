#include "trainers/engine/pipeline_job.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config/method_traits.h"
#include "absl/strings/str_format.h"
#include "core/config/job_config.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/model/model_config.h"

namespace aln::engine {
namespace fs = std::filesystem;
namespace {

std::string embedding_name(const model::ModelConfig& c) {
  return c.family == model::Family::kGpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
}

bool tied_output(const model::ModelConfig& c) { return c.tie_embeddings && c.head == model::Head::kCausalLm; }

}  // namespace

absl::Status check_pipeline_supported(const aln::v1::JobSpec& spec) {
  const auto& p = spec.parallel();
  if (p.overlap()) {
    return absl::UnimplementedError(
        "parallel.overlap: not combined with pipeline stages yet; set it to false when pipeline_parallel > 1");
  }
  const auto stages = config::effective_stages(spec);
  for (size_t s = 0; s < stages.size(); ++s) {
    const config::MethodTraits method = config::method_traits(stages[s].trainer());
    const std::string where = spec.stages_size() > 0 ? absl::StrCat("stages[", s, "].trainer") : "trainer";
    // Methods whose loss needs one policy forward pass per micro-batch (the pipeline carries one)
    // say so in job.proto; the others generate text, which needs the whole model in one place.
    if (!method.pipeline) {
      return absl::UnimplementedError(absl::StrCat(where, ": ", method.name, " does not run on pipeline stages yet (",
                                                   absl::StrJoin(config::method_names(/*pipeline_only=*/true), ", "),
                                                   " do); set parallel.policy.pipeline_parallel: 1"));
    }
    if (stages[s].reference().mode() == aln::v1::ON_THE_FLY) {
      return absl::UnimplementedError(
          absl::StrCat(spec.stages_size() > 0 ? absl::StrCat("stages[", s, "].") : "",
                       "reference.mode: on_the_fly needs the whole reference in every step; pipelined jobs cache the "
                       "reference log-probs (set reference.mode: cache)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> pipeline_stage_bounds(const model::ModelConfig& c, const aln::v1::GridSpec& grid) {
  const int stages = grid.pipeline_parallel();
  if (c.num_layers < stages) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.policy.pipeline_parallel: ", stages,
                                                   " stages need at least as many layers; the model has ", c.num_layers,
                                                   " (use at most ", c.num_layers, " stages)"));
  }
  if (grid.stage_layers_size() > 0) {
    return dist::explicit_stages(std::vector<int64_t>(grid.stage_layers().begin(), grid.stage_layers().end()),
                                 c.num_layers, stages, "parallel.policy.stage_layers");
  }
  // Cost = parameters: each layer's own; the embedding on the first stage; the final norm and the
  // output projection on the last (a tied model's embedding counts there again: the last stage
  // multiplies by it).
  std::vector<double> layers(static_cast<size_t>(c.num_layers), 0.0);
  double first = 0, last = 0;
  for (const auto& [name, shape] : model::DecoderModel::expected_shapes(c)) {
    double n = 1;
    for (int64_t d : shape) n *= static_cast<double>(d);
    const int64_t i = model::DecoderModel::layer_of(c, name);
    if (i >= 0) {
      layers[static_cast<size_t>(i)] += n;
    } else if (name == embedding_name(c) || name == "transformer.wpe.weight") {
      first += n;
      if (name == embedding_name(c) && tied_output(c)) last += n;
    } else {
      last += n;
    }
  }
  return dist::balance_stages(layers, first, last, stages);
}

std::string describe_bounds(const std::vector<int64_t>& bounds) {
  std::string out;
  for (size_t s = 0; s + 1 < bounds.size(); ++s)
    absl::StrAppend(&out, s ? " " : "", "[", bounds[s], ", ", bounds[s + 1], ")");
  return out;
}

dist::PipelineSchedule pipeline_schedule(aln::v1::PipelineSchedule schedule) {
  return schedule == aln::v1::GPIPE ? dist::PipelineSchedule::kGpipe : dist::PipelineSchedule::kOneFOneB;
}

void sum_tied_embedding_gradients(model::DecoderModel& stage, Pipeline& pipeline) {
  const model::ModelConfig& c = stage.config();
  if (!tied_output(c) || pipeline.stages() == 1) return;
  const std::string name = embedding_name(c);
  auto it = stage.tensors().find(name);
  at::NoGradGuard no_grad;
  at::Tensor g;
  if (it != stage.tensors().end() && it->second.grad().defined()) {
    g = it->second.grad().contiguous();
  } else {
    g = at::zeros({c.vocab_size, c.hidden_size}, at::kFloat);  // middle stages (and an unused copy) add zeros
  }
  pipeline.sum(g);
  if (it != stage.tensors().end()) {
    if (it->second.grad().defined() && it->second.grad().is_same(g)) return;
    it->second.mutable_grad() = g;
  }
}

std::string tied_copy_name(const model::DecoderModel& stage) {
  return tied_output(stage.config()) && !stage.is_first_stage() && stage.is_last_stage()
             ? embedding_name(stage.config())
             : std::string();
}

nlohmann::json export_pipeline_stats(Pipeline& pipeline, int micro_batches, const std::string& stage_name,
                                     MetricsRegistry& metrics, bool exporter) {
  const PipelineStats& st = pipeline.stats();
  const std::vector<double> all = pipeline.gather(
      {st.forward_s, st.backward_s, st.idle_s, st.total_s, st.sent_bytes, static_cast<double>(st.max_alive)});
  nlohmann::json out = {{"stages", pipeline.stages()},
                        {"micro_batches", micro_batches},
                        {"theoretical_bubble", dist::theoretical_bubble(pipeline.stages(), micro_batches)}};
  for (int s = 0; s < pipeline.stages(); ++s) {
    const double* v = &all[static_cast<size_t>(6 * s)];
    const double bubble = v[3] > 0 ? v[2] / v[3] : 0;
    out["bubble"].push_back(bubble);
    out["forward_seconds"].push_back(v[0]);
    out["backward_seconds"].push_back(v[1]);
    out["sent_bytes"].push_back(v[4]);
    out["max_alive"].push_back(static_cast<int>(v[5]));
    if (!exporter) continue;
    const Labels l{{"stage", stage_name}, {"pipeline_stage", std::to_string(s)}};
    metrics
        .gauge("aln_pipeline_bubble_fraction", "Share of the last step a pipeline stage waited for its neighbours", l)
        .Set(bubble);
    for (auto [pass, secs] : {std::pair{"forward", v[0]}, {"backward", v[1]}, {"idle", v[2]}}) {
      Labels lp = l;
      lp["pass"] = pass;
      metrics.gauge("aln_pipeline_seconds", "Seconds of the last step per pipeline stage and pass", lp).Set(secs);
    }
    metrics.gauge("aln_pipeline_sent_bytes", "Activation and gradient bytes a stage sent in the last step", l)
        .Set(v[4]);
    metrics
        .gauge("aln_pipeline_activations_alive_max",
               "Most micro-batches whose activations a stage held at once in the last step", l)
        .Set(v[5]);
  }
  if (exporter) {
    metrics
        .gauge("aln_pipeline_bubble_theoretical", "(stages - 1) / (micro-batches + stages - 1)",
               {{"stage", stage_name}})
        .Set(out["theoretical_bubble"].get<double>());
  }
  return out;
}

absl::Status save_pipeline_model(const model::DecoderModel& stage, const std::vector<int64_t>& bounds,
                                 const std::string& dir, bool writer, Pipeline& pipeline) {
  if (!writer) return absl::OkStatus();
  const model::ModelConfig& c = stage.config();
  const fs::path tmp(dir + ".pipeline-tmp");
  std::error_code ec;
  if (pipeline.first()) {
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
  }
  if (pipeline.sum(ec ? 1.0 : 0.0) > 0) {
    return absl::PermissionDeniedError(absl::StrCat(tmp.string(), ": cannot create (", ec.message(), ")"));
  }
  const int n = pipeline.stages();
  auto shard_name = [n](int s) { return absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, n); };
  // Each stage writes what it owns; the tied output copy is the first stage's embedding.
  io::NamedTensors mine;
  const std::string copy = tied_copy_name(stage);
  for (const auto& [name, t] : stage.tensors()) {
    if (name != copy) mine.emplace_back(name, t.detach().to(at::kFloat).contiguous());
  }
  absl::Status written = io::save_safetensors((tmp / shard_name(pipeline.stage())).string(), mine, {{"format", "pt"}});
  if (pipeline.sum(written.ok() ? 0.0 : 1.0) > 0) {
    return written.ok() ? absl::InternalError("another pipeline stage could not write its shard (see its log)")
                        : written;
  }
  if (!pipeline.first()) return absl::OkStatus();
  // The index names every tensor's shard: the first stage that owns it.
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t total_bytes = 0;
  for (const auto& [name, shape] : model::DecoderModel::expected_shapes(c)) {
    if (name == "lm_head.weight" && tied_output(c)) continue;
    int owner = 0;
    while (owner < n && !model::DecoderModel::stage_owns(c, name, bounds[static_cast<size_t>(owner)],
                                                         bounds[static_cast<size_t>(owner) + 1])) {
      ++owner;
    }
    weight_map[name] = shard_name(owner);
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    total_bytes += numel * 4;
  }
  nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  absl::Status s = io::write_text_atomically((tmp / "config.json").string(), model::to_hf_config_json(c));
  if (s.ok()) s = io::write_text_atomically((tmp / "model.safetensors.index.json").string(), index.dump(2));
  if (!s.ok()) return s;
  const fs::path old(dir + ".old-pipeline");
  fs::remove_all(old, ec);
  if (fs::exists(dir)) fs::rename(dir, old, ec);
  fs::rename(tmp, dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot move ", tmp.string(), " to ", dir, ": ", ec.message()));
  fs::remove_all(old, ec);
  return absl::OkStatus();
}

}  // namespace aln::engine
