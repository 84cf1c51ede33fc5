#include "trainers/engine/sharded_start.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <functional>
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
// last one's the final norm and head), each tensor once.
Stream from_directory(const std::string& dir, int64_t layers) {
  return [dir, layers](const Take& take) -> absl::Status {
    std::set<std::string> seen;
    for (int64_t l = 0; l < layers; ++l) {
      auto stage = model::load_hf_stage(dir, l, l + 1);
      if (!stage.ok()) return stage.status();
      for (const auto& [name, t] : stage->tensors()) {
        if (seen.insert(name).second) take(name, t);
      }
    }
    return absl::OkStatus();
  };
}

}  // namespace

bool starts_sharded(const PolicyWorker& w) {
  return config::policy_shard(w.spec) == aln::v1::FULL && w.dp->size() > 1 && !w.pipeline &&
         trainers::job_special_tokens(w.spec).empty();
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
    each = from_directory(dir, config.num_layers);
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
  model::TensorMap shapes;
  for (const auto& [name, shape] : model::DecoderModel::expected_shapes(config)) {
    shapes.emplace(name, at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta)));
  }
  auto policy = model::DecoderModel::from_tensors(config, std::move(shapes));
  if (!policy.ok()) return policy.status();
  w.policy.emplace(std::move(*policy));
  w.fsdp =
      std::make_unique<FullySharded>(*w.dp, *w.policy, w.spec.parallel().deterministic(), FullySharded::ShapesOnly{});
  if (each) {
    absl::Status streamed = each([&w](const std::string& name, const at::Tensor& value) {
      optim::TensorMap one{{name, value.to(at::kFloat).contiguous()}};
      w.dp->broadcast(one);  // rank 0's values on every rank, as the whole start's broadcast
      w.fsdp->take(name, one.at(name));
    });
    if (!streamed.ok()) return streamed;
  } else {
    auto parts = read_shard_ranges(*w.resumed->shards, w.fsdp->ranges(), {""});
    // Ranks read different files: all stop if one could not (instead of waiting in the next collective).
    if (w.dp->sum(parts.ok() ? 0.0 : 1.0) > 0) {
      return parts.ok() ? absl::DataLossError(absl::StrCat("another rank could not read its part of ", w.resumed->path,
                                                           "'s policy (see its log)"))
                        : parts.status();
    }
    w.fsdp->take_parts(*parts);
  }
  w.log.info("sharded start: each rank filled its shards from %s (no rank held the whole model)", from);
  return true;
}

}  // namespace aln::engine
