#include "trainers/rollouts/producer.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/io/safetensors.h"

namespace aln::trainers {
namespace {

namespace fs = std::filesystem;

constexpr char kSnapshotFile[] = "rollout_sampler.safetensors";
// Where checkpoints written before the producer existed (GRPO kept the snapshot itself) have it.
constexpr char kOldSnapshotFile[] = "grpo_sampler.safetensors";
constexpr char kVersionKey[] = "__sampler_version__";

}  // namespace

RolloutProducer::RolloutProducer(RolloutPlan plan, std::shared_ptr<const PolicyCopier> copier,
                                 const model::DecoderModel* policy)
    : plan_(std::move(plan)), copier_(copier ? std::move(copier) : whole_policy_copier()), policy_(policy) {
  ALN_CHECK(plan_.group_size > 0, "a rollout producer for a plan that samples nothing");
}

void RolloutProducer::produce(const std::vector<const buffer::Example*>& batch, StepContext& ctx) {
  // Bounded staleness: training steps sample with a snapshot taken at most max_staleness versions
  // ago (renewed when it would be older); evaluation samples on-policy.
  const bool stale = ctx.training && plan_.max_staleness > 0;
  if (stale && (!sampler_ || ctx.step - sampler_version_ > plan_.max_staleness)) {
    sampler_.reset();  // the old one goes first: at most one copy alive
    sampler_ = copier_->copy(*ctx.policy);
    sampler_version_ = ctx.step;
  }
  StepContext sample_ctx = ctx;
  if (stale) {
    sample_ctx.policy = &sampler_->model();
    sample_ctx.sampler_version = sampler_version_;
  }
  // A sampling version's first micro-batch asks ahead for every one it serves (rollout ranks): the
  // rest of this step's and, with a snapshot, the later steps' of its window.
  const int64_t version = stale ? sampler_version_ : ctx.step;
  if (ctx.training && version != asked_version_) {
    ask_ahead(sample_ctx, stale ? sampler_version_ + plan_.max_staleness : ctx.step, plan_.group_size,
              plan_.generation);
    asked_version_ = version;
  }
  ctx.rollouts =
      std::make_shared<const RolloutBatch>(sample_rollouts(batch, sample_ctx, plan_.group_size, plan_.generation));
  ctx.sampler = stale ? &sampler_->model() : nullptr;
}

void RolloutProducer::before_save() {
  if (sampler_) to_save_ = sampler_->gather_on_lead();
}

absl::Status RolloutProducer::save_state(const std::string& dir) const {
  if (!sampler_) return absl::OkStatus();
  std::optional<model::DecoderModel> gathered = std::exchange(to_save_, std::nullopt);
  const model::DecoderModel& m = gathered ? *gathered : sampler_->model();
  if (m.param_gather() != nullptr) {
    return absl::FailedPreconditionError("the sharded sampling snapshot was not put together before it was saved");
  }
  // Stored as a whole snapshot is (in the dtype the policy computes in), whichever way it was kept.
  const at::ScalarType dtype = m.tensors().begin()->second.scalar_type();
  const at::ScalarType compute = policy_ != nullptr ? policy_->compute_dtype() : at::ScalarType::Undefined;
  const at::ScalarType stored = compute == at::ScalarType::Undefined ? dtype : compute;
  io::NamedTensors named;
  for (const auto& [name, t] : m.tensors()) named.emplace_back(name, t.to(stored));
  named.emplace_back(kVersionKey, at::tensor({sampler_version_}, at::kLong));
  return io::save_safetensors((fs::path(dir) / kSnapshotFile).string(), named);
}

absl::Status RolloutProducer::load_state(const std::string& dir) {
  std::string path = (fs::path(dir) / kSnapshotFile).string();
  if (!fs::exists(path)) path = (fs::path(dir) / kOldSnapshotFile).string();
  if (!fs::exists(path)) return absl::OkStatus();
  absl::Status found = absl::OkStatus();
  auto file = io::load_safetensors(path, [](const std::string& name) { return name == kVersionKey; });
  if (!file.ok()) {
    found = file.status();
  } else if (file->tensors.count(kVersionKey) == 0) {
    found = absl::DataLossError(
        absl::StrCat(path, ": no ", kVersionKey, "; the checkpoint cannot resume the sampling snapshot"));
  } else if (policy_ == nullptr) {
    found = absl::FailedPreconditionError("the rollout producer has no policy to place a resumed snapshot like");
  }
  // A sharded read is collective: every rank goes on to it, or all stop with the error.
  found = copier_->agree(found, path);
  if (!found.ok()) return found;
  sampler_version_ = file->tensors.at(kVersionKey).item<int64_t>();
  auto read = copier_->read(path, policy_->config(), *policy_);
  if (!read.ok()) return read.status();
  sampler_ = std::move(*read);
  return absl::OkStatus();
}

}  // namespace aln::trainers
