#pragma once
// Models a trainer learns beside the policy, each with an AdamW of its own (HAIR's shadow reward
// models). Who makes them decides how they are kept, as with the policy copies of policy_copy.h:
// whole on every rank, their gradients summed over the ranks before each update (whole_learned(),
// the default), or, beside a fully sharded policy, sharded the same way (the engine's,
// trainers/engine/sharded_learned.h): parameters, gradients and AdamW moments 1/N a rank, each
// layer gathered while it runs, gradients reduce-scattered as backward makes them. A sharded
// model's passes are collective: every rank runs the same passes in the same order, so a trainer
// asks collective() and runs a pass it has no rows for on a row it ignores.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "core/model/decoder.h"
#include "core/optim/optimizer.h"

namespace aln::trainers {

class LearnedModel {
 public:
  virtual ~LearnedModel() = default;
  virtual model::DecoderModel& model() = 0;
  virtual const model::DecoderModel& model() const = 0;
  // Passes are collective (sharded): every rank must run the same ones, in the same order.
  virtual bool collective() const = 0;
  // One update from the gradients the backward passes since the last left: summed over the ranks
  // (`sum_gradients`, the trainer's StepContext::sum_gradients, for a whole model; a sharded one's were
  // summed during backward), the norm clipped to `max_norm`, AdamW at `lr` (skipped when the norm
  // is not finite), gradients cleared. Returns the norm before clipping, the same on every rank.
  // Collective when sharded.
  virtual double step(double lr, double max_norm,
                      const std::function<void(std::map<std::string, at::Tensor>&)>& sum_gradients) = 0;
  // The parameters and AdamW state, whole (the state keyed as optim::AdamW::state() keys it), on the
  // lead rank; collective when sharded, where the other ranks get empty maps.
  virtual std::pair<optim::TensorMap, optim::TensorMap> whole_state() const = 0;
  // Parameters and AdamW state saved whole (every rank passes the same); each rank keeps its part.
  virtual void load_whole_state(const optim::TensorMap& params, const optim::TensorMap& optimizer) = 0;
};

class LearnedModelMaker {
 public:
  virtual ~LearnedModelMaker() = default;
  // A learned model starting from `whole` (float32, the same on every rank; the maker takes it).
  // Collective when sharded.
  virtual std::unique_ptr<LearnedModel> make(model::DecoderModel whole, const optim::AdamWOptions& options) const = 0;
};

// Models kept whole in this process.
std::shared_ptr<const LearnedModelMaker> whole_learned();

}  // namespace aln::trainers
