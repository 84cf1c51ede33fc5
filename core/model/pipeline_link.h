#pragma once
// How a pipeline stage's slice of a decoder meets its neighbours. A stage model (DecoderModel with
// a layer range) asks the link for its input when it does not start at the embedding, and hands its
// output to the link when it does not end at the head. The engine implements the link over the
// communicator; the model itself knows nothing of ranks, so trainers call the policy exactly as in
// one process.
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace aln::model {

// Thrown by hand_on: the forward pass of a stage that is not the last ends here (the trainer's loss
// is computed on the last stage). Deliberately not a std::exception, so no handler meant for errors
// catches it by accident.
struct ForwardHandedOn {};

class PipelineLink {
 public:
  virtual ~PipelineLink() = default;
  // The previous stage's hidden states for this forward pass ([batch, time, hidden], derived from
  // the batch the trainer collated, so variable sequence lengths need no shape messages).
  virtual at::Tensor receive(const std::vector<int64_t>& shape, at::ScalarType dtype) = 0;
  // This stage's output goes to the next stage; throws ForwardHandedOn.
  [[noreturn]] virtual void hand_on(const at::Tensor& output) = 0;
};

}  // namespace aln::model
