#include "trainers/engine/sharded_start.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/config/job_config.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/model_config.h"
#include "trainers/engine/job_setup.h"
#include "trainers/trainer.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;
using Take = std::function<void(const std::string&, const at::Tensor&)>;
using Stream = std::function<absl::Status(const Take&)>;

// A Hugging Face directory, one layer at a time (the first layer's read brings the embedding, the
// last one's the final norm and head), each tensor once. Data-parallel rank 0 alone reads; the others
// take each tensor's shape from the config (rank 0's values arrive by the broadcast), in the order
// rank 0's layer map has them, and every layer's read is agreed on before its tensors go out.
Stream from_directory(const std::string& dir, const model::ModelConfig& config, const DataParallel& dp) {
  return [dir, config, &dp](const Take& take) -> absl::Status {
    const auto expected = model::DecoderModel::expected_shapes(config);
    const std::map<std::string, std::vector<int64_t>> shapes(expected.begin(), expected.end());
    std::set<std::string> seen;
    for (int64_t l = 0; l < config.num_layers; ++l) {
      absl::StatusOr<model::DecoderModel> stage = absl::UnavailableError("read on data-parallel rank 0");
      if (dp.lead()) stage = model::load_hf_stage(dir, l, l + 1);
      absl::Status agreed =
          dp.agree(dp.lead() ? stage.status() : absl::OkStatus(),
                   absl::DataLossError(absl::StrCat("rank 0 could not read ", dir, " (see its log)")));
      if (!agreed.ok()) return agreed;
      for (const auto& [name, shape] : shapes) {  // name order: the layer map's
        if (!model::DecoderModel::stage_owns(config, name, l, l + 1) || !seen.insert(name).second) continue;
        take(name, dp.lead() ? stage->tensors().at(name) : at::empty(shape, at::TensorOptions().dtype(at::kFloat)));
      }
    }
    return absl::OkStatus();
  };
}

// Broadcasts every tensor `each` yields from data-parallel rank 0 and keeps this rank's ranges of
// it; every one of the model's `expected` parameters must come (a file with fewer would otherwise
// leave zeros). `from` names the source in errors.
absl::Status fill_shards(const Stream& each, const DataParallel& dp, FullySharded& sharded, size_t expected,
                         const std::string& from) {
  std::set<std::string> taken;
  absl::Status streamed = each([&](const std::string& name, const at::Tensor& value) {
    optim::TensorMap one{{name, value.to(at::kFloat).contiguous()}};
    dp.broadcast(one);  // rank 0's values on every rank, as the whole start's broadcast
    sharded.take(name, one.at(name));
    taken.insert(name);
  });
  if (!streamed.ok()) return streamed;
  if (taken.size() != expected) {
    return absl::DataLossError(
        absl::StrCat(from, ": ", taken.size(), " of the model's ", expected, " tensors arrived"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<model::DecoderModel> shapes_only_model(const model::ModelConfig& config) {
  model::TensorMap shapes;
  for (const auto& [name, shape] : model::DecoderModel::expected_shapes(config)) {
    shapes.emplace(name, at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta)));
  }
  return model::DecoderModel::from_tensors(config, std::move(shapes));
}

absl::Status fill_shards_from_directory(const std::string& dir, const model::ModelConfig& config,
                                        const DataParallel& dp, FullySharded& sharded) {
  return fill_shards(from_directory(dir, config, dp), dp, sharded, model::DecoderModel::expected_shapes(config).size(),
                     absl::StrCat(dir, ", one layer at a time"));
}

bool runs_fully_sharded(const PolicyWorker& w) {
  return config::policy_shard(w.spec) == aln::v1::FULL && w.dp->size() > 1 && !w.pipeline;
}

bool starts_sharded(const PolicyWorker& w) {
  return runs_fully_sharded(w) && trainers::job_special_tokens(w.spec).empty();
}

absl::StatusOr<bool> start_sharded(PolicyWorker& w) {
  model::ModelConfig config;
  Stream each;  // unset: this rank's parts of a sharded checkpoint
  std::string from;
  if (w.resumed && w.resumed->shards) {
    const ShardIndex& index = *w.resumed->shards;
    auto parsed = model::parse_hf_config(index.config_json, (fs::path(index.dir) / "index.json").string());
    if (!parsed.ok()) return parsed.status();
    config = *parsed;
    from = absl::StrCat("this rank's parts of ", index.dir);
  } else if (w.resumed || !w.spec.model().path().empty()) {
    const std::string dir = w.resumed ? (fs::path(w.resumed->path) / "model").string() : w.spec.model().path();
    auto parsed = model::load_hf_config((fs::path(dir) / "config.json").string());
    if (!parsed.ok()) return parsed.status();
    config = *parsed;
    each = from_directory(dir, config, *w.dp);
    from = absl::StrCat(dir, ", one layer at a time");
  } else {
    auto made = initial_config(w.spec, w.encoder);
    if (!made.ok()) return made.status();
    config = *made;
    const auto seed = static_cast<uint64_t>(config::effective_init_seed(w.spec));
    each = [config, seed](const Take& take) {
      model::DecoderModel::random_init_each(config, seed, take);
      return absl::OkStatus();
    };
    from = "a seeded random model, one tensor at a time";
  }
  if (config.vocab_size < w.encoder.vocab_size()) return false;
  // The parameters' shapes only (meta tensors: no memory), which the shards' layout is cut from.
  auto policy = shapes_only_model(config);
  if (!policy.ok()) return policy.status();
  w.policy.emplace(std::move(*policy));
  w.fsdp =
      std::make_unique<FullySharded>(*w.dp, *w.policy, w.spec.parallel().deterministic(), FullySharded::ShapesOnly{});
  if (each) {
    absl::Status filled = fill_shards(each, *w.dp, *w.fsdp, w.policy->tensors().size(), from);
    if (!filled.ok()) return filled;
  } else {
    auto parts = read_shard_ranges(*w.resumed->shards, w.fsdp->ranges(), {""});
    // Ranks read different files: all stop if one could not (instead of waiting in the next collective).
    absl::Status agreed =
        w.dp->agree(parts.status(), absl::DataLossError(absl::StrCat("another rank could not read its part of ",
                                                                     w.resumed->path, "'s policy (see its log)")));
    if (!agreed.ok()) return agreed;
    w.fsdp->take_parts(*parts);
  }
  w.log.info("sharded start: each rank filled its shards from %s (no rank held the whole model)", from);
  return true;
}

}  // namespace aln::engine
