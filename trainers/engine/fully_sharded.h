#pragma once
// Fully sharded data parallelism for the policy (parallel.policy.shard: full; FSDP / ZeRO-3).
//
// The policy is cut into units: each decoder layer is one, the final norm and head another (the
// "outer" unit, with the embedding too when the head is the tied embedding), and an untied
// embedding (with GPT-2's positions) one of its own. A unit's tensors, laid end to end in
// name order and padded to a multiple of the rank count, are cut into equal ranges; each rank keeps
// only its range (the shard, float32: the trained values, what AdamW updates). The model's own map
// then holds placeholders whose storage is empty, and the model asks this class for a unit's tensors
// as it needs them (core/model/param_gather.h):
//   forward   each layer's unit is all-gathered just before the layer runs, freed right after;
//             an untied embedding is gathered for the lookup and freed right after it (its
//             backward needs only the ids); the outer unit is gathered for the head (tied: at the
//             start, the embedding being used at both ends) and kept through the pass's backward
//             (without autograd: until pass_done() or the next pass's start, whichever comes first).
//   backward  a node on the layer's output gathers the unit again just before the layer's backward
//             runs; once the layer's gradients are all there, they are reduce-scattered (each rank
//             receives the sum over ranks of its range, added to its shard's gradient) and the
//             gathered tensors are freed.
// The next layer's gather is started before the current layer computes (prefetch): in forward the
// layer after it (after the last layer, an untied head's unit), in backward the one before it (into
// the storage its forward pass used, so the tensors autograd saved see it), so the collective runs
// while the layer computes. At most one
// gather is in flight; a prefetch a pass did not take is waited for and dropped before the shards
// change (owned(), take()) or its storage goes.
// So a rank holds 1/N of the layers, the outer unit, and two gathered layers at a time (the one
// running and the next), instead of the whole model, its gradients and its moments. AdamW is elementwise, so updating
// the ranges gives the unsharded run's numbers: bit for bit with parallel.deterministic and one forward pass per
// optimizer step (sums in rank order, as the deterministic all-reduce adds them); otherwise within float32 rounding
// (per micro-batch reduce-scatters add in another order than one all-reduce of the accumulated gradients). Checkpoints
// are sharded the same way: each rank writes its parts of the parameters and moments, described per parameter
// (fsdp_checkpoint.h), so a run resumes on any number of ranks, sharded or not. The final model is written by rank 0
// one unit at a time as the ranks gather it (for_each_whole and io::save_safetensors_streamed).
//
// Every rank must run the same passes in the same order (each gather is a collective); the engine
// keeps evaluation unsplit and makes the ranks decode in step when each generates for prompts of
// its own (its generate hook). The
// model's map tensors are valid only during a pass (the outer ones until pass_done() or the next
// pass): callers must not keep them across passes.
// A start need not build the whole model first: from the parameters' shapes alone (ShapesOnly), the
// shards are filled tensor by tensor or from a sharded checkpoint's parts (sharded_start.h).
// Known costs: with a coordinator process of its own the final model is gathered on rank 0 and
// sent whole (the model's float32 size there, briefly);
// parallel.deterministic's reduce-scatter gathers every rank's unit gradient first (ranks x one
// unit in flight).
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/model/decoder.h"
#include "core/model/param_gather.h"
#include "core/optim/optimizer.h"
#include "distributed/communicator.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/fsdp_checkpoint.h"

namespace aln::engine {

class FullySharded final : public model::ParamGather {
 public:
  // Cuts `policy` (whole, and the same on every rank) into units, keeps this rank's shards and
  // attaches itself to the policy, whose layers from then on are there only while they run.
  // `deterministic`: gradients summed in rank order (parallel.deterministic).
  FullySharded(const DataParallel& dp, model::DecoderModel& policy, bool deterministic);
  // A sharded start: `policy` holds only the parameters' shapes (meta tensors, requires_grad as the
  // run trains). The shards start at zero; take() and take_parts() fill them, so no rank ever holds
  // more of the model than one tensor and its shards.
  // `device`: where the shards go (meta tensors have none).
  struct ShapesOnly {
    at::Device device{at::kCPU};
  };
  FullySharded(const DataParallel& dp, model::DecoderModel& policy, bool deterministic, ShapesOnly shapes);
  // Copies this rank's range of parameter `name` out of its whole value.
  void take(const std::string& name, const at::Tensor& whole);
  // Copies this rank's ranges in directly: `parts` keyed by parameter name, each the range ranges()
  // lists for this rank (read from a sharded checkpoint by read_shard_ranges).
  void take_parts(const optim::TensorMap& parts);
  // Detaches from the policy (which is left without its parameters: take whole() first).
  ~FullySharded() override;
  FullySharded(const FullySharded&) = delete;
  FullySharded& operator=(const FullySharded&) = delete;

  // model::ParamGather
  void gather_outer() override;
  void embedded() override;
  void gather_head() override;
  void gather_layer(int64_t layer) override;
  at::Tensor release_layer(int64_t layer, const at::Tensor& output) override;
  void set_requires_grad(bool requires_grad) override;
  void pass_done() override;

  // This rank's part of every parameter: 1-D views of the shards, each with the matching view of
  // its shard's gradient when backward made one. What AdamW updates and clipping measures.
  optim::TensorMap owned();
  // Every rank's parts (keyed "<name><suffix>", cut as owned() cuts; a missing one counts as zeros)
  // put together into whole tensors shaped as the parameters, keyed the same. Collective.
  // `lead_only`: only data-parallel rank 0 keeps the result (the others take part and get nothing),
  // so a checkpoint's whole state is never held on every rank at once.
  optim::TensorMap assemble(const optim::TensorMap& parts, const std::string& suffix, bool lead_only = false) const;
  // This rank's parts of whole tensors (keyed "<name><suffix>"; others are ignored).
  optim::TensorMap cut(const optim::TensorMap& whole, const std::string& suffix) const;
  // This rank's part of every parameter's values (1-D views of the shards, no gradients).
  optim::TensorMap parameter_parts() const;
  // Which elements of each parameter every rank keeps (a sharded checkpoint's index), and this
  // rank's ranges alone (what it reads back from one).
  std::map<std::string, ShardedTensor> layout() const;
  std::vector<ShardRange> ranges() const;
  // Every parameter whole, one at a time in the policy map's (name) order, each unit gathered once
  // while its tensors pass (consecutive names share a unit; the outer unit is gathered at both ends).
  // A fingerprint of the weights without the whole model. Collective.
  void for_each_whole(const std::function<void(const std::string&, const at::Tensor&)>& f) const;
  // The whole policy, float32, a copy that shares nothing with the shards. Collective.
  model::DecoderModel whole() const;
  // The same on data-parallel rank 0 only (checkpoints, the final model); the others take part.
  std::optional<model::DecoderModel> whole_on_lead() const;
  // Drops the shards' gradients.
  void clear_gradients();

  const DataParallel& group() const { return dp_; }  // the ranks the shards are spread over
  int64_t shard_bytes() const;         // parameter bytes this rank keeps
  int64_t whole_bytes() const;         // the whole model's
  int64_t outer_bytes() const;         // the outer unit, gathered (held through each pass)
  int64_t embedding_bytes() const;     // an untied embedding's unit, gathered (0 when tied)
  int64_t largest_layer_bytes() const; // one layer, gathered
  // Layer bytes gathered at once at most since the last reset (forward and backward).
  int64_t peak_layer_bytes() const { return peak_layer_bytes_; }
  void reset_peak() { peak_layer_bytes_ = layer_bytes_; }
  // Prefetched gathers a pass used, and ones dropped unused (each a gather done twice).
  int64_t prefetches_used() const { return prefetches_used_; }
  int64_t prefetches_dropped() const { return prefetches_dropped_; }
  double owned_share() const;  // this rank's share of the parameters' elements

  // For the autograd nodes (fully_sharded.cpp): a new storage with unit `unit` gathered into it;
  // gather into an existing one again; free one; this rank's range of the sum over ranks of a
  // unit-shaped flat gradient.
  at::Tensor materialize(size_t unit);
  void refill(size_t unit, const at::Tensor& flat);
  void free(size_t unit, const at::Tensor& flat);
  // Frees the outer unit's gathered storage when only the model's map holds it.
  void drop_unheld_outer();
  at::Tensor reduce_scatter(size_t unit, const at::Tensor& flat_grad) const;
  // The unit's tensors as tensors over `flat`'s storage (not autograd views of it), name order.
  std::vector<at::Tensor> unflatten(size_t unit, const at::Tensor& flat) const;
  // Puts a unit's tensors into the policy's map.
  void place(size_t unit, const std::vector<at::Tensor>& tensors);
  // Backward's prefetch: gathers layer unit `unit` into `flat` (the storage its forward pass used,
  // freed since) while the layer after it computes its backward; refill(unit, flat) then takes it.
  void prefetch_into(size_t unit, const at::Tensor& flat);

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0;  // first element inside the unit's flat layout
    int64_t numel = 0;
  };
  struct Unit {
    std::vector<Entry> entries;
    int64_t total = 0;  // elements, unpadded
    int64_t width = 0;  // elements per rank
    at::Tensor shard;   // [width]: this rank's range (a leaf; backward adds to its gradient)
  };
  void cut_into_units();  // units and zero shards from the policy map's names and shapes
  void finish();          // placeholders into the policy's map, and the gather attached
  void gather(size_t unit);
  // A gather started now and waited for by the unit's next materialize() (forward: `flat` is a new
  // storage) or refill() of the same storage (backward).
  void start_prefetch(size_t unit, const at::Tensor& flat, bool backward);
  // Waits for the gather in flight, if any; one nobody took is dropped (its storage freed).
  void settle();
  void allocate(const at::Tensor& flat);        // gives a freed storage its bytes back
  at::Tensor layer_storage(size_t unit) const;  // a new storage for a unit, gathered
  bool is_layer(size_t unit) const { return unit >= first_layer_; }
  std::optional<model::DecoderModel> gather_whole(bool lead_only) const;
  int64_t lo(const Unit& u) const { return static_cast<int64_t>(dp_.rank()) * u.width; }

  const DataParallel& dp_;
  model::DecoderModel& policy_;
  bool deterministic_;
  at::Device shapes_device_{at::kCPU};  // the shards' device when the policy's tensors are meta (ShapesOnly)
  // [0]: outer (final norm and head; the embedding too when tied), [1]: an untied embedding,
  // [first_layer_ + l]: decoder layer l.
  std::vector<Unit> units_;
  size_t embedding_ = 0;    // the embedding's unit (0 when tied)
  size_t first_layer_ = 1;  // 2 with an untied embedding
  std::map<std::string, std::pair<size_t, size_t>> where_;  // parameter -> (unit, entry)
  bool trains_ = false;
  int64_t layer_bytes_ = 0;  // layer units gathered now (a prefetch counts from its start)
  int64_t peak_layer_bytes_ = 0;
  struct Prefetch {
    size_t unit = 0;
    at::Tensor flat;  // the storage the gather writes
    std::unique_ptr<dist::Work> work;
    bool backward = false;
  };
  std::optional<Prefetch> prefetch_;  // the gather in flight
  int64_t prefetches_used_ = 0;
  int64_t prefetches_dropped_ = 0;
  // The storage the pass's previous layer was gathered into, while autograd records the pass: the
  // next layer's re-gather node keeps it, to prefetch that layer in backward.
  at::Tensor last_released_;
};

}  // namespace aln::engine
