#pragma once
// Models a trainer learns beside a fully sharded policy (a trainers::LearnedModelMaker; HAIR's shadow
// reward models), sharded over the same ranks as the policy (parallel.policy.shard: full): each
// rank keeps 1/N of every model's parameters, gradients and AdamW moments (FullySharded and
// ShardedAdamW, as the policy), gathers a layer at a time for each pass and reduce-scatters the
// gradients as backward makes them. Passes are collective. A checkpoint or the stage's export puts
// a model together on rank 0 (whole there, briefly); a resume reads the saved model whole on every
// rank and keeps its parts.
#include <cstdint>
#include <memory>

#include "trainers/engine/data_parallel.h"
#include "trainers/learned_model.h"

namespace aln::engine {

class ShardedLearnedMaker final : public trainers::LearnedModelMaker {
 public:
  // `dp`: the policy's data-parallel group (it must outlive the maker and its models).
  ShardedLearnedMaker(const DataParallel& dp, bool deterministic) : dp_(dp), deterministic_(deterministic) {}
  std::unique_ptr<trainers::LearnedModel> make(model::DecoderModel whole,
                                               const optim::AdamWOptions& options) const override;

  // The models made and still alive: how many, the parameter bytes this rank keeps of them, and
  // their whole size (for the job log).
  struct Kept {
    int64_t models = 0, bytes = 0, whole_bytes = 0;
  };
  Kept kept() const { return *kept_; }

 private:
  const DataParallel& dp_;
  bool deterministic_;
  std::shared_ptr<Kept> kept_ = std::make_shared<Kept>();  // the models update it as they come and go
};

}  // namespace aln::engine
