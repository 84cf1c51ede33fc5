#pragma once
// Decoder language models (Llama family and GPT-2), written functionally over a map of parameter
// tensors named exactly as in Hugging Face checkpoints ("model.layers.0.self_attn.q_proj.weight"),
// so loading and saving is a rename-free copy and the parameter set is easy to shard by layer.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/model/model_config.h"
#include "core/model/param_gather.h"
#include "core/model/pipeline_link.h"
#include "core/model/scratch_pool.h"

namespace aln::model {

using TensorMap = std::map<std::string, at::Tensor>;

// Per-layer key/value cache for incremental decoding: [B, kv_heads, T_cached, head_dim] each. With
// `capacity` set (generation knows prompt + max_new_tokens), the buffers are allocated once at that
// length and each step writes its keys in place: appending by concatenation would copy the whole
// cache every step.
struct KvCache {
  std::vector<at::Tensor> keys;  // [B, kv_heads, capacity or T_cached, head_dim]
  std::vector<at::Tensor> values;
  int64_t capacity = 0;  // 0: grow by concatenation
  int64_t filled = 0;    // positions written (with capacity; a static step leaves it to its caller)
  // A decoding step of one fixed shape, which a CUDA graph can capture once and replay (generation.cpp):
  // one token per row, its keys and values written at `write_at` ([1] int64, on the model's device),
  // attending over the whole capacity through `allowed` ([B, 1, 1, capacity] bool: the positions
  // written so far that are not padding, and `write_at`), at `positions` ([B, 1] int64). Everything
  // that changes from step to step is in these tensors, updated in place between steps: the step
  // reads nothing from the host. Unwritten positions hold zeros (the buffers are zeroed when made)
  // and are masked out.
  struct StaticStep {
    at::Tensor positions, allowed, write_at;
  };
  const StaticStep* step = nullptr;
  int64_t length() const {
    if (capacity > 0) return filled;
    return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2);
  }
};

class DecoderModel {
 public:
  // Seeded random initialisation (normal(0, 0.02) weights, unit norms, zero biases).
  static DecoderModel random_init(const ModelConfig& config, uint64_t seed);
  // The same values made one tensor at a time, each handed to `take` (in expected_shapes order) and
  // then dropped: a fully sharded start keeps only its part of each, never the whole model.
  static void random_init_each(const ModelConfig& config, uint64_t seed,
                               const std::function<void(const std::string&, const at::Tensor&)>& take);
  // Checks that every expected tensor is present with the expected shape and that there are no
  // unexpected ones; errors name the tensor.
  static absl::StatusOr<DecoderModel> from_tensors(const ModelConfig& config, TensorMap tensors);
  // The same for a pipeline stage: exactly the tensors stage_owns(first, end) names.
  static absl::StatusOr<DecoderModel> stage_from_tensors(const ModelConfig& config, TensorMap tensors, int64_t first,
                                                         int64_t end);

  // Names and shapes this config needs, in checkpoint naming.
  static std::vector<std::pair<std::string, std::vector<int64_t>>> expected_shapes(const ModelConfig& config);

  // input_ids [B, T] int64, attention_mask [B, T] (1 = token, 0 = padding; left or right padding).
  // Position ids come from the mask (cumsum - 1). Returns the final hidden states [B, T, H].
  // `right_padded`: the caller knows every row's padding is on the right (collated batches), so
  // attention takes the kernel's own causal path without reading a device mask (on a GPU that is
  // what lets the flash kernel run); false: a host mask is read to find out, a device mask is used.
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache = nullptr,
                           bool right_padded = false) const;
  // Causal LM logits [B, T, V].
  at::Tensor logits(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache = nullptr) const;
  // Logits of the last position only [B, V] (generation: the output projection is the costliest
  // matmul of a small model, so the prompt's other positions skip it).
  at::Tensor last_logits(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache = nullptr) const;
  // The next-token logits [B, V] of one static decoding step (KvCache::StaticStep): `input_ids` [B, 1]
  // after the cache was filled (with a capacity) by earlier passes; `cache->step` must be set.
  at::Tensor static_step_logits(const at::Tensor& input_ids, KvCache* cache) const;
  // The output projection of given hidden states [..., H] -> [..., V]: with hidden_states() it lets
  // callers project only the positions they score (training needs log-probs of response tokens
  // only; the projection over the vocabulary is the largest activation of a small model).
  at::Tensor output_logits(const at::Tensor& hidden) const;
  // The output projection's weight [V, H] (the embedding tensor itself when tied): output_logits
  // is linear(hidden, output_weight()). Trainers that form the logits' gradient themselves
  // (chunked full-vocabulary losses) contract it with this weight.
  at::Tensor output_weight() const;
  // Sequence-classification scores [B, num_labels] at the last non-padding token (reward models).
  at::Tensor scores(const at::Tensor& input_ids, const at::Tensor& attention_mask) const;

  const ModelConfig& config() const { return config_; }
  TensorMap& tensors() { return tensors_; }
  const TensorMap& tensors() const { return tensors_; }
  // Tensors to save: tied output embeddings are not written (as transformers does).
  TensorMap checkpoint_tensors() const;

  int64_t num_parameters() const;
  // Forward FLOPs per token at context length `context` (2 per multiply-add; attention scores
  // included); training is about 3x this.
  double forward_flops_per_token(int64_t context) const;

  // A deep copy in `dtype` (never shares storage with this model, even in the same dtype).
  DecoderModel to(at::ScalarType dtype) const;
  // A deep copy on `device` in `dtype` (runtime.device: the engine places every model once).
  DecoderModel to(const at::Device& device, at::ScalarType dtype) const;
  // Where the model's tensors are (its first tensor's device; the CPU for a model without tensors).
  at::Device device() const;
  // The dtype its tensors are stored in (the first tensor's; float32 for a model without tensors).
  at::ScalarType storage_dtype() const;
  // Mixed precision (model.dtype: bfloat16): passes compute in `dtype` while the tensors stay as
  // stored. Each floating tensor is cast as a pass reads it (a differentiable cast, so gradients
  // reach float32 master weights in float32), as autocast does; log-softmax, norms and losses
  // still accumulate in float32. Undefined (the default): compute in the storage dtype. Copies
  // (to(), copy construction) keep the setting.
  void set_compute_dtype(at::ScalarType dtype) { compute_ = dtype; }
  at::ScalarType compute_dtype() const { return compute_; }
  // Grows the vocabulary to `new_vocab_size` (for added special tokens such as control tokens). New
  // embedding and output rows start at the mean of the existing rows, as transformers does, so new
  // tokens begin as "average" tokens instead of random noise. Shrinking is an error.
  void resize_vocabulary(int64_t new_vocab_size);
  void set_requires_grad(bool requires_grad);

  // Pipeline stages. A stage holds decoder layers [first, end) of the whole model, the embedding
  // when first == 0 and the final norm and head when end == num_layers (with tied embeddings the
  // last stage keeps its own copy of the embedding as the output weight; the engine keeps the two
  // copies equal). Tensor names stay the whole model's, so stages save into one checkpoint.
  static bool stage_owns(const ModelConfig& config, const std::string& name, int64_t first, int64_t end);
  // The decoder layer a tensor belongs to, or -1 (embedding, final norm, head).
  static int64_t layer_of(const ModelConfig& config, const std::string& name);
  // This model cut down to a stage (it must be whole); drops the other tensors.
  DecoderModel stage(int64_t first, int64_t end) &&;
  int64_t first_layer() const { return first_layer_; }
  int64_t end_layer() const { return end_layer_; }
  bool is_first_stage() const { return first_layer_ == 0; }
  bool is_last_stage() const { return end_layer_ == config_.num_layers; }
  bool is_whole() const { return is_first_stage() && is_last_stage(); }
  // Where a stage that is not whole gets its input and sends its output (not owned; unset for a
  // whole model). Set by the pipeline engine around each forward pass.
  // (A runtime attachment, not model state: mutable, so const models used by trainers can run.)
  void set_pipeline_link(PipelineLink* link) const { link_ = link; }
  // Fully sharded parameters (param_gather.h): the gather brings each layer's tensors into this
  // model's map for the pass and frees them after. Not owned; unset (nullptr) for a model that holds
  // its tensors. A model with a gather attached cannot be copied with to(): ask the gather for the
  // whole model (a collective).
  void set_param_gather(ParamGather* gather) const { gather_ = gather; }
  ParamGather* param_gather() const { return gather_; }

 private:
  DecoderModel(ModelConfig config, TensorMap tensors)
      : config_(std::move(config)), tensors_(std::move(tensors)), end_layer_(config_.num_layers) {}
  // The tensor `name` as passes use it: in the compute dtype when one is set (kWhole), or as stored
  // for the caller to cast what it reads of it (kRows: embedding lookups, the score head).
  enum class Cast { kWhole, kRows };
  at::Tensor t(const std::string& name, Cast cast = Cast::kWhole) const;

  ModelConfig config_;
  TensorMap tensors_;
  int64_t first_layer_ = 0;
  int64_t end_layer_ = 0;
  mutable PipelineLink* link_ = nullptr;
  mutable ParamGather* gather_ = nullptr;
  at::ScalarType compute_ = at::ScalarType::Undefined;
  // Buffers of the no-grad linear layers, reused pass after pass (shared by copies of this object).
  std::shared_ptr<ScratchPool> scratch_ = std::make_shared<ScratchPool>();
};

}  // namespace aln::model
