#pragma once
// Where a decoder whose parameters are sharded over ranks (fully sharded data parallelism) gets them.
// The model reads its tensors by name as always; with a ParamGather attached, it first asks for the
// tensors outside the decoder layers (embedding, final norm, head) at the start of each pass, and for
// each layer's just before that layer runs, and lets the layer's go right after it. The engine
// implements it over the communicator (trainers/engine/fully_sharded.h); the model knows nothing of
// ranks, so trainers call the policy exactly as in one process.
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace aln::model {

class ParamGather {
 public:
  virtual ~ParamGather() = default;
  // At the start of a pass: the embedding (and positions), whole, into the model's tensors. With
  // tied embeddings this is also the head's unit (then kept until the next pass).
  virtual void gather_outer() = 0;
  // After the embedding lookup: an embedding that is not also the head can go (its backward needs
  // only the token ids).
  virtual void embedded() = 0;
  // Before the final norm: the final norm and head, whole (kept until the next pass).
  virtual void gather_head() = 0;
  // Layer `layer`'s tensors, whole, into the model's tensors.
  virtual void gather_layer(int64_t layer) = 0;
  // After layer `layer` ran: its gathered tensors are freed. Returns the layer's output to go on
  // with: when autograd records the pass, a node on it gathers the tensors again just before the
  // layer's backward needs them.
  virtual at::Tensor release_layer(int64_t layer, const at::Tensor& output) = 0;
  // DecoderModel::set_requires_grad on a sharded model: the shards are the trained tensors.
  virtual void set_requires_grad(bool requires_grad) = 0;
  // A pass without autograd is over and its caller keeps nothing of it: the outer tensors (embedding,
  // final norm, head) may go now rather than at the next pass's start, so a frozen model scored
  // before the policy's pass holds no whole head through that pass. Kept while anything else
  // holds them (an autograd graph, a caller's tensor).
  virtual void pass_done() {}
};

}  // namespace aln::model
