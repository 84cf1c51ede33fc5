#include "launcher/memory_plan.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/config/job_config.h"
#include "core/model/model_config.h"

namespace aln::launcher {
namespace fs = std::filesystem;

absl::StatusOr<PolicyStateEstimate> policy_state_per_rank(const aln::v1::JobSpec& spec, const std::string& reads_from) {
  model::ModelConfig config;
  if (spec.model().path().empty()) {
    config = model::from_job_spec(spec.model().config());
  } else {
    fs::path dir(spec.model().path());
    if (dir.is_relative()) dir = fs::path(reads_from) / dir;
    auto loaded = model::load_hf_config((dir / "config.json").string());
    if (!loaded.ok()) return loaded.status();
    config = *loaded;
  }
  PolicyStateEstimate e;
  e.parameters = model::parameter_count(config);
  // Weights and gradients are float32 (mixed precision keeps float32 master weights and casts them
  // as passes read them, about 2 more bytes a parameter held for backward).
  const bool narrow = spec.model().dtype() == aln::v1::BFLOAT16 || spec.model().dtype() == aln::v1::FLOAT16;
  const double weights = narrow ? 4 + 2 : 4, gradients = 4;
  const aln::v1::GridSpec& grid = spec.parallel().policy();
  const int dp = std::max(1, grid.data_parallel()), pp = std::max(1, grid.pipeline_parallel());
  // ZeRO-1 and ZeRO-2 divide the moments; ZeRO-2's reduce-scatter starts after backward, so the
  // whole gradient still exists during it (docs/distributed.md). FSDP divides everything (the head
  // and a gathered layer or two come on top: this stays a lower bound).
  const aln::v1::ShardLevel level = config::policy_shard(spec);
  const bool sharded = level != aln::v1::NONE, full = level == aln::v1::FULL;
  const double moments = 8.0 / (sharded ? dp : 1);
  const double held = (weights + gradients) / (full ? dp : 1);
  const double per_parameter = held + moments;
  e.bytes_per_rank = static_cast<double>(e.parameters) * per_parameter / pp;
  e.breakdown = absl::StrFormat(
      "%.1f M parameters x %.2f bytes (weights %g, gradients %g, AdamW moments %.2f%s)%s", e.parameters / 1e6,
      per_parameter, weights / (full ? dp : 1), gradients / (full ? dp : 1), moments,
      full ? absl::StrCat(", all sharded over ", dp, " ranks") : sharded ? absl::StrCat(" sharded over ", dp, " ranks") : "",
      pp > 1 ? absl::StrCat(" / ", pp, " pipeline stages") : "");
  return e;
}

absl::Status check_policy_fits(const PolicyStateEstimate& estimate, double slot_bytes, const aln::v1::JobSpec& spec) {
  if (slot_bytes <= 0 || estimate.bytes_per_rank <= slot_bytes) return absl::OkStatus();
  constexpr double kGiB = 1024.0 * 1024 * 1024;
  const int dp = std::max(1, spec.parallel().policy().data_parallel());
  // (With pipeline stages only `optimizer` combines; `gradients` and `full` are refused there.)
  const bool pipelined = spec.parallel().policy().pipeline_parallel() > 1;
  const char* level = pipelined ? "optimizer" : "full";
  const aln::v1::ShardLevel now = config::policy_shard(spec);
  std::string advice;
  if (now != aln::v1::FULL && !pipelined && dp > 1) {
    advice = absl::StrCat("set parallel.policy.shard: full to divide the whole training state over the ", dp,
                          " ranks, ");
  } else if (now == aln::v1::NONE && dp > 1) {
    advice = absl::StrCat("set parallel.policy.shard: ", level, " to divide the moments over the ", dp, " ranks, ");
  } else if (dp == 1) {
    advice = absl::StrCat("raise parallel.policy.data_parallel with parallel.policy.shard: ", level, ", ");
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "model: the policy's training state alone needs at least %.2f GiB per rank (%s), more than one slot's %.2f GiB "
      "(--slot-memory-gib); %suse pipeline stages, a smaller model, or hosts with more memory",
      estimate.bytes_per_rank / kGiB, estimate.breakdown, slot_bytes / kGiB, advice));
}

}  // namespace aln::launcher
