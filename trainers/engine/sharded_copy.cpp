#include "trainers/engine/sharded_copy.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/status.h"
#include "trainers/engine/sharded_start.h"

namespace aln::engine {
namespace {

class ShardedCopy final : public trainers::PolicyCopy {
 public:
  // Placeholders of `config`'s shapes, and zero shards on `device` (take_parts / take fill them).
  ShardedCopy(model::DecoderModel shapes, const DataParallel& dp, bool deterministic, const at::Device& device)
      : model_(std::make_unique<model::DecoderModel>(std::move(shapes))),
        shards_(std::make_unique<FullySharded>(dp, *model_, deterministic, FullySharded::ShapesOnly{device})) {}
  const model::DecoderModel& model() const override { return *model_; }
  std::optional<model::DecoderModel> gather_on_lead() const override { return shards_->whole_on_lead(); }
  FullySharded& shards() { return *shards_; }

 private:
  // The model first: the shards detach from it before it goes.
  std::unique_ptr<model::DecoderModel> model_;
  std::unique_ptr<FullySharded> shards_;
};

absl::StatusOr<model::DecoderModel> shapes_of(const model::ModelConfig& config, const model::DecoderModel& policy) {
  auto made = shapes_only_model(config);
  if (!made.ok()) return made.status();
  made->set_compute_dtype(policy.compute_dtype());  // computes as the policy does
  return made;
}

}  // namespace

std::unique_ptr<trainers::PolicyCopy> ShardedPolicyCopier::copy(const model::DecoderModel& policy) const {
  ALN_CHECK(policy.param_gather() == &policy_, "a sharded copy is taken of the fully sharded policy it was made for");
  auto shapes = shapes_of(policy.config(), policy);
  ALN_THROW_IF_ERROR(shapes.status());
  auto made = std::make_unique<ShardedCopy>(std::move(*shapes), dp_, deterministic_, policy.device());
  made->shards().take_parts(policy_.parameter_parts());  // this rank's ranges: nothing gathered
  return made;
}

absl::StatusOr<std::unique_ptr<trainers::PolicyCopy>> ShardedPolicyCopier::read(
    const std::string& path, const model::ModelConfig& config, const model::DecoderModel& policy) const {
  auto shapes = shapes_of(config, policy);
  if (!shapes.ok()) return shapes.status();
  auto made = std::make_unique<ShardedCopy>(std::move(*shapes), dp_, deterministic_, policy.device());
  // Every rank reads only its own ranges (pread), the file's shapes checked against the model's first.
  absl::Status read = absl::OkStatus();
  auto header = io::read_safetensors_header(path);
  if (!header.ok()) {
    read = header.status();
  } else {
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const io::SafetensorsEntry& e : header->entries) shapes.emplace(e.name, e.shape);
    for (const auto& [name, shape] : model::DecoderModel::expected_shapes(config)) {
      auto found = shapes.find(name);
      if (found == shapes.end() || found->second != shape) {
        read = absl::DataLossError(absl::StrCat(path, ": ", found == shapes.end() ? "no tensor " : "a wrong shape for ",
                                                name, " (a snapshot of another model?)"));
        break;
      }
    }
  }
  if (read.ok()) {
    std::vector<io::SafetensorsSlice> slices;
    for (const ShardRange& r : made->shards().ranges()) slices.push_back({r.name, r.name, r.offset, r.numel});
    auto parts = io::load_safetensors_slices(path, slices);
    if (parts.ok()) {
      made->shards().take_parts(optim::TensorMap(parts->begin(), parts->end()));  // to float32 as they are copied
    } else {
      read = parts.status();
    }
  }
  // Ranks may see different folders: all go on, or all stop with the error where it happened.
  absl::Status agreed = agree(read, path);
  if (!agreed.ok()) return agreed;
  return std::unique_ptr<trainers::PolicyCopy>(std::move(made));
}

absl::Status ShardedPolicyCopier::agree(const absl::Status& local, const std::string& what) const {
  return dp_.agree(local, absl::DataLossError(absl::StrCat("another rank could not read ", what, " (see its log)")));
}

}  // namespace aln::engine
