#pragma once
// The tiny decoder the trainer and engine unit tests share: big enough to have every part (GQA-free
// attention, MLP, norms), small enough that a forward and backward take microseconds.
#include "core/model/decoder.h"

namespace aln::testing {

inline model::ModelConfig tiny_config(model::Head head = model::Head::kCausalLm) {
  model::ModelConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 24;
  c.max_position = 64;
  c.head = head;
  return c;
}

}  // namespace aln::testing
