#include "trainers/policy_copy.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors.h"

namespace aln::trainers {
namespace {

class WholeCopy final : public PolicyCopy {
 public:
  explicit WholeCopy(model::DecoderModel m) : model_(std::move(m)) {}
  const model::DecoderModel& model() const override { return model_; }

 private:
  model::DecoderModel model_;
};

// Stored in the dtype `policy` computes in, and computing in it (no cast per pass).
at::ScalarType stored_dtype(const model::DecoderModel& policy) {
  const at::ScalarType compute = policy.compute_dtype();
  return compute == at::ScalarType::Undefined ? at::kFloat : compute;
}

class WholeCopier final : public PolicyCopier {
 public:
  std::unique_ptr<PolicyCopy> copy(const model::DecoderModel& policy) const override {
    model::DecoderModel m = policy.to(stored_dtype(policy));
    m.set_compute_dtype(at::ScalarType::Undefined);
    return std::make_unique<WholeCopy>(std::move(m));
  }
  absl::StatusOr<std::unique_ptr<PolicyCopy>> read(const std::string& path, const model::ModelConfig& config,
                                                   const model::DecoderModel& policy) const override {
    std::set<std::string> names;
    for (const auto& [name, shape] : model::DecoderModel::expected_shapes(config)) names.insert(name);
    auto file = io::load_safetensors(path, [&](const std::string& name) { return names.count(name) > 0; });
    if (!file.ok()) return file.status();
    model::TensorMap tensors(file->tensors.begin(), file->tensors.end());
    auto m = model::DecoderModel::from_tensors(config, std::move(tensors));
    if (!m.ok()) return absl::DataLossError(absl::StrCat(path, ": ", m.status().message()));
    // Read on the host: placed and stored as the policy computes (as when it was taken).
    model::DecoderModel placed = m->to(policy.device(), stored_dtype(policy));
    placed.set_compute_dtype(at::ScalarType::Undefined);
    return std::unique_ptr<PolicyCopy>(std::make_unique<WholeCopy>(std::move(placed)));
  }
};

}  // namespace

std::shared_ptr<const PolicyCopier> whole_policy_copier() { return std::make_shared<WholeCopier>(); }

}  // namespace aln::trainers
