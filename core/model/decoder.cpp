#include "core/model/decoder.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <torch/version.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/model/fast_linear.h"
#include "core/status.h"

namespace aln::model {
namespace {

std::string layer(int64_t i, const std::string& rest, Family f) {
  return f == Family::kGpt2 ? absl::StrCat("transformer.h.", i, ".", rest)
                            : absl::StrCat("model.layers.", i, ".", rest);
}

// Inverse RoPE frequencies, with Llama 3's piecewise rescaling of long wavelengths; made on the
// device of `like` (the positions), so nothing is copied from the host in a pass.
at::Tensor rope_inv_freq(const ModelConfig& c, const at::Tensor& like) {
  const int64_t d = c.head_dim;
  at::Tensor inv =
      1.0 / at::pow(c.rope_theta, at::arange(0, d, 2, like.options().dtype(at::kFloat)) / static_cast<double>(d));
  if (c.rope_scaling != RopeScaling::kLlama3) return inv;
  const double low_wavelen = c.rope_original_max_position / c.rope_low_freq_factor;
  const double high_wavelen = c.rope_original_max_position / c.rope_high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv;
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv / c.rope_factor, inv);
  at::Tensor smooth = (c.rope_original_max_position / wavelen - c.rope_low_freq_factor) /
                      (c.rope_high_freq_factor - c.rope_low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return at::where(medium, smoothed, scaled);
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // Normalise in float32 whatever the storage dtype, as the reference implementation does.
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, true) + eps);
  return weight * h.to(x.scalar_type());
}

}  // namespace

at::Tensor DecoderModel::t(const std::string& name, Cast cast) const {
  auto it = tensors_.find(name);
  ALN_CHECK(it != tensors_.end(), "model tensor '", name, "' is missing");
  const at::Tensor& stored = it->second;
  if (cast == Cast::kRows || compute_ == at::ScalarType::Undefined || compute_ == stored.scalar_type() ||
      !stored.is_floating_point()) {
    return stored;
  }
  return stored.to(compute_);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> DecoderModel::expected_shapes(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const bool score = c.head == Head::kSequenceScore;
  if (c.family == Family::kGpt2) {
    out.push_back({"transformer.wte.weight", {c.vocab_size, h}});
    out.push_back({"transformer.wpe.weight", {c.max_position, h}});
    for (int64_t i = 0; i < c.num_layers; ++i) {
      for (const char* ln : {"ln_1", "ln_2"}) {
        out.push_back({layer(i, absl::StrCat(ln, ".weight"), c.family), {h}});
        out.push_back({layer(i, absl::StrCat(ln, ".bias"), c.family), {h}});
      }
      // GPT-2's Conv1D stores weights as [in, out].
      out.push_back({layer(i, "attn.c_attn.weight", c.family), {h, 3 * h}});
      out.push_back({layer(i, "attn.c_attn.bias", c.family), {3 * h}});
      out.push_back({layer(i, "attn.c_proj.weight", c.family), {h, h}});
      out.push_back({layer(i, "attn.c_proj.bias", c.family), {h}});
      out.push_back({layer(i, "mlp.c_fc.weight", c.family), {h, c.intermediate_size}});
      out.push_back({layer(i, "mlp.c_fc.bias", c.family), {c.intermediate_size}});
      out.push_back({layer(i, "mlp.c_proj.weight", c.family), {c.intermediate_size, h}});
      out.push_back({layer(i, "mlp.c_proj.bias", c.family), {h}});
    }
    out.push_back({"transformer.ln_f.weight", {h}});
    out.push_back({"transformer.ln_f.bias", {h}});
  } else {
    out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
    for (int64_t i = 0; i < c.num_layers; ++i) {
      out.push_back({layer(i, "input_layernorm.weight", c.family), {h}});
      out.push_back({layer(i, "self_attn.q_proj.weight", c.family), {q, h}});
      out.push_back({layer(i, "self_attn.k_proj.weight", c.family), {kv, h}});
      out.push_back({layer(i, "self_attn.v_proj.weight", c.family), {kv, h}});
      if (c.qkv_bias) {
        out.push_back({layer(i, "self_attn.q_proj.bias", c.family), {q}});
        out.push_back({layer(i, "self_attn.k_proj.bias", c.family), {kv}});
        out.push_back({layer(i, "self_attn.v_proj.bias", c.family), {kv}});
      }
      out.push_back({layer(i, "self_attn.o_proj.weight", c.family), {h, q}});
      out.push_back({layer(i, "post_attention_layernorm.weight", c.family), {h}});
      out.push_back({layer(i, "mlp.gate_proj.weight", c.family), {c.intermediate_size, h}});
      out.push_back({layer(i, "mlp.up_proj.weight", c.family), {c.intermediate_size, h}});
      out.push_back({layer(i, "mlp.down_proj.weight", c.family), {h, c.intermediate_size}});
    }
    out.push_back({"model.norm.weight", {h}});
  }
  if (score) {
    out.push_back({"score.weight", {c.num_labels, h}});
  } else if (!c.tie_embeddings) {
    out.push_back({"lm_head.weight", {c.vocab_size, h}});
  }
  return out;
}

DecoderModel DecoderModel::random_init(const ModelConfig& config, uint64_t seed) {
  TensorMap tensors;
  random_init_each(config, seed,
                   [&tensors](const std::string& name, const at::Tensor& value) { tensors.emplace(name, value); });
  return DecoderModel(config, std::move(tensors));
}

void DecoderModel::random_init_each(const ModelConfig& config, uint64_t seed,
                                    const std::function<void(const std::string&, const at::Tensor&)>& take) {
  ALN_THROW_IF_ERROR(validate(config, "model config"));
  // One generator drawn in expected_shapes order: the values depend only on the config and the seed.
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (const auto& [name, shape] : expected_shapes(config)) {
    const bool norm = name.find("norm") != std::string::npos || name.find("ln_") != std::string::npos;
    const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (bias)
      take(name, at::zeros(shape, at::kFloat));
    else if (norm)
      take(name, at::ones(shape, at::kFloat));
    else
      take(name, at::empty(shape, at::kFloat).normal_(0.0, 0.02, gen));
  }
}

absl::StatusOr<DecoderModel> DecoderModel::from_tensors(const ModelConfig& config, TensorMap tensors) {
  return stage_from_tensors(config, std::move(tensors), 0, config.num_layers);
}

absl::StatusOr<DecoderModel> DecoderModel::stage_from_tensors(const ModelConfig& config, TensorMap tensors,
                                                              int64_t first, int64_t end) {
  absl::Status valid = validate(config, "config.json");
  if (!valid.ok()) return valid;
  // Tied checkpoints may still carry lm_head.weight; GPT-2 files may carry attention-mask buffers.
  if (config.tie_embeddings) tensors.erase("lm_head.weight");
  for (auto it = tensors.begin(); it != tensors.end();) {
    const std::string& n = it->first;
    const bool buffer = n.find(".attn.bias") != std::string::npos || n.find(".attn.masked_bias") != std::string::npos ||
                        n.find("rotary_emb.inv_freq") != std::string::npos;
    it = buffer ? tensors.erase(it) : std::next(it);
  }
  if (first < 0 || first >= end || end > config.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage layers [", first, ", ", end, ") are not a range of the ", config.num_layers, " layers"));
  }
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
  for (auto& e : expected_shapes(config)) {
    if (stage_owns(config, e.first, first, end)) expected.push_back(std::move(e));
  }
  std::vector<std::string> missing;
  for (const auto& [name, shape] : expected) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.sizes().vec() != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "' has shape [", absl::StrJoin(it->second.sizes().vec(), ", "), "] but the config needs [",
          absl::StrJoin(shape, ", "), "]; the config does not match the weights"));
    }
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(missing.size(), " tensor(s) missing from the checkpoint, first: '", missing.front(), "'"));
  }
  if (tensors.size() != expected.size()) {
    std::vector<std::string> extra;
    for (const auto& [name, value] : tensors) {
      bool known = false;
      for (const auto& e : expected) known = known || e.first == name;
      if (!known) extra.push_back(name);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected tensor(s) in the checkpoint: ", absl::StrJoin(extra, ", "),
                     " (wrong architecture in config.json?)"));
  }
  DecoderModel model(config, std::move(tensors));
  model.first_layer_ = first;
  model.end_layer_ = end;
  return model;
}

at::Tensor DecoderModel::output_weight() const {
  if (config_.family == Family::kGpt2) {
    return config_.tie_embeddings ? t("transformer.wte.weight") : t("lm_head.weight");
  }
  return config_.tie_embeddings ? t("model.embed_tokens.weight") : t("lm_head.weight");
}

namespace {

// Every row is real tokens followed by padding only (non-increasing along time).
bool right_padded(const at::Tensor& mask) {
  const int64_t n = mask.size(1);
  return n < 2 || mask.narrow(1, 1, n - 1).le(mask.narrow(1, 0, n - 1)).all().item<bool>();
}

// GPT-2's Conv1D: x W + b with W stored [in, out], given to fast_linear as its transposed view: in
// training its layer reads W through the view (no copy) and takes each product to Aln's GEMM or the
// BLAS as measured; without autograd the GEMM reads the view for many rows, and the BLAS for a
// decoding step's few (fast_linear's decoding kernel wants W's rows [out, in] in memory).
at::Tensor conv1d(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& b) {
  return fast_linear(x2d, w.t(), b);
}

}  // namespace

at::Tensor DecoderModel::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache,
                                       bool known_right_padded) const {
  const ModelConfig& c = config_;
  ALN_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, "input_ids must be int64 [batch, time]");
  const KvCache::StaticStep* fixed = cache == nullptr ? nullptr : cache->step;
  const int64_t past = cache == nullptr ? 0 : cache->length();
  const int64_t b = input_ids.size(0), n = input_ids.size(1), total = past + n;
  if (fixed != nullptr) {
    ALN_CHECK(n == 1 && cache->capacity > 0 && !cache->keys.empty() && cache->keys[first_layer_].defined(),
              "a static decoding step takes one token per row, after a pass filled a cache with a capacity");
  } else {
    ALN_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == input_ids.size(0) &&
                  attention_mask.size(1) == past + input_ids.size(1),
              "attention_mask must be [batch, cached + new tokens]");
  }
  const at::Tensor mask = fixed != nullptr ? at::Tensor() : attention_mask.to(at::kLong);
  // Positions count real tokens only, so left padding does not shift them.
  at::Tensor positions = fixed != nullptr ? fixed->positions : (mask.cumsum(1) - 1).clamp_min(0).narrow(1, past, n);
  // Attention mask [B, 1, n, total]: causal and not padding. Each query may also see itself, so
  // padding rows never have an empty softmax (their outputs are ignored anyway). A single decoding
  // step only needs the key-padding row.
  at::Tensor allowed;
  // Without left padding or cache the kernel's own causal path is faster than an explicit mask (on
  // CPU 1.2x at 256 tokens, 1.9x at 1,024, forward and backward; on GPU it is what lets the flash
  // kernel run). Right padding needs no mask: a real token's causal window holds only real tokens,
  // and what padding positions compute is never used (losses and scores mask them). Knowing the
  // padding is on the right takes a read of the mask: free for a host mask, a device sync for a
  // device one, so a device mask always takes the explicit path (the step stays free of syncs).
  const bool plain_causal =
      fixed == nullptr && past == 0 && n > 1 && (known_right_padded || (attention_mask.is_cpu() && right_padded(mask)));
  if (fixed != nullptr) {
    allowed = fixed->allowed;
  } else if (plain_causal) {
    // leave `allowed` undefined
  } else if (n == 1) {
    allowed = mask.to(at::kBool).view({b, 1, 1, total}).clone();
    allowed.select(3, total - 1).fill_(true);
  } else {
    at::Tensor causal = at::ones({n, total}, mask.options().dtype(at::kBool)).tril(past);
    allowed = causal.unsqueeze(0) & mask.to(at::kBool).unsqueeze(1);
    at::Tensor self = at::zeros({n, total}, mask.options().dtype(at::kBool));
    self.narrow(1, past, n).fill_diagonal_(true);
    allowed = (allowed | self.unsqueeze(0)).unsqueeze(1);
  }

  const bool gpt2 = c.family == Family::kGpt2;
  ALN_CHECK(is_whole() || (cache == nullptr && link_ != nullptr),
            "a pipeline stage runs only inside the pipeline engine (no KV cache, a link set)");
  ALN_CHECK(gather_ == nullptr || is_whole(), "sharded parameters and pipeline stages do not combine");
  if (gather_ != nullptr) gather_->gather_outer();
  at::Tensor x;
  if (!is_first_stage()) {
    x = link_->receive({b, n, c.hidden_size},
                       compute_ != at::ScalarType::Undefined ? compute_ : tensors_.begin()->second.scalar_type());
  } else {
    // Mixed precision: the rows looked up are cast, not the whole table (a float32 table's gradient
    // then stays float32); the same values as a lookup in a bfloat16 copy of it.
    auto embed = [&](const char* name, const at::Tensor& ids) {
      at::Tensor rows = at::embedding(t(name, Cast::kRows), ids);
      return compute_ != at::ScalarType::Undefined && rows.scalar_type() != compute_ ? rows.to(compute_) : rows;
    };
    x = gpt2 ? embed("transformer.wte.weight", input_ids) + embed("transformer.wpe.weight", positions)
             : embed("model.embed_tokens.weight", input_ids);
  }
  if (gather_ != nullptr) gather_->embedded();
  at::Tensor cos, sin;
  if (!gpt2) {
    at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * rope_inv_freq(c, positions).unsqueeze(0).unsqueeze(0);
    at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);  // [B, 1, n, d]
    cos = emb.cos().to(x.scalar_type());
    sin = emb.sin().to(x.scalar_type());
  }
  if (cache != nullptr && cache->keys.empty()) {
    cache->keys.resize(c.num_layers);
    cache->values.resize(c.num_layers);
  }
  const int64_t groups = c.num_heads / c.num_kv_heads;
  bool x_is_ours = is_first_stage();  // made by this pass (the embedding), not received
  for (int64_t i = first_layer_; i < end_layer_; ++i) {
    if (gather_ != nullptr) gather_->gather_layer(i);
    at::Tensor q, k, v, attn_out;
    if (gpt2) {
      at::Tensor h = at::layer_norm(x, {c.hidden_size}, t(layer(i, "ln_1.weight", c.family)),
                                    t(layer(i, "ln_1.bias", c.family)), c.norm_eps);
      at::Tensor qkv = conv1d(h.reshape({-1, c.hidden_size}), t(layer(i, "attn.c_attn.weight", c.family)),
                              t(layer(i, "attn.c_attn.bias", c.family)))
                           .view({b, n, 3, c.num_heads, c.head_dim});
      q = qkv.select(2, 0).transpose(1, 2);
      k = qkv.select(2, 1).transpose(1, 2);
      v = qkv.select(2, 2).transpose(1, 2);
    } else {
      at::Tensor h = rms_norm(x, t(layer(i, "input_layernorm.weight", c.family)), c.norm_eps);
      auto proj = [&](const char* name, int64_t heads) {
        const std::string w = layer(i, absl::StrCat("self_attn.", name, ".weight"), c.family);
        at::Tensor bias = c.qkv_bias ? t(layer(i, absl::StrCat("self_attn.", name, ".bias"), c.family)) : at::Tensor();
        return fast_linear(h, t(w), bias, scratch_.get()).view({b, n, heads, c.head_dim}).transpose(1, 2);
      };
      q = proj("q_proj", c.num_heads);
      k = proj("k_proj", c.num_kv_heads);
      v = proj("v_proj", c.num_kv_heads);
      q = q * cos + rotate_half(q) * sin;
      k = k * cos + rotate_half(k) * sin;
    }
    if (fixed != nullptr) {
      // The whole capacity, every step: the same shapes and addresses for a graph to replay.
      cache->keys[i].index_copy_(2, fixed->write_at, k);
      cache->values[i].index_copy_(2, fixed->write_at, v);
      k = cache->keys[i];
      v = cache->values[i];
    } else if (cache != nullptr && cache->capacity > 0) {
      ALN_CHECK(past + n <= cache->capacity, "KV cache capacity ", cache->capacity, " exceeded (", past + n, ")");
      if (!cache->keys[i].defined()) {
        // Zeros, not uninitialised memory: a static step attends over the whole capacity, and a masked
        // position's value still enters the weighted sum (times a zero weight, which a NaN would survive).
        cache->keys[i] = at::zeros({b, k.size(1), cache->capacity, k.size(3)}, k.options());
        cache->values[i] = at::zeros({b, v.size(1), cache->capacity, v.size(3)}, v.options());
      }
      cache->keys[i].narrow(2, past, n).copy_(k);
      cache->values[i].narrow(2, past, n).copy_(v);
      k = cache->keys[i].narrow(2, 0, past + n);
      v = cache->values[i].narrow(2, 0, past + n);
      if (i + 1 == c.num_layers) cache->filled = past + n;
    } else if (cache != nullptr) {
      if (cache->keys[i].defined()) {
        k = at::cat({cache->keys[i], k}, 2);
        v = at::cat({cache->values[i], v}, 2);
      }
      cache->keys[i] = k;
      cache->values[i] = v;
    }
    if (n == 1 && groups > 1 && q.is_cuda()) {
      // One new token per row (decoding) on a GPU: each key/value head's group of query heads attends
      // as one head's `groups` queries ([B, kv_heads, groups, d]; the same products), so the kernel
      // reads the cache once per key/value head and needs no grouped-query support (the GPU kernels
      // that take a mask lack it, and the fallback would copy the cache per group every step). Not
      // on the CPU, where it measured 5-8% slower (bench/model_vs_transformers.py, batch 8).
      attn_out = at::scaled_dot_product_attention(q.reshape({b, c.num_kv_heads, groups, c.head_dim}), k, v, allowed)
                     .reshape({b, n, -1});
    } else {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
    // Grouped-query attention inside the kernel: no per-step copies of the cache per head group.
    attn_out = at::scaled_dot_product_attention(q, k, v, plain_causal ? std::optional<at::Tensor>() : allowed, 0.0,
                                                plain_causal, std::nullopt, /*enable_gqa=*/groups > 1)
                   .transpose(1, 2)
                   .reshape({b, n, -1});
#else
    if (groups > 1) {
      k = k.repeat_interleave(groups, 1);
      v = v.repeat_interleave(groups, 1);
    }
    attn_out = at::scaled_dot_product_attention(q, k, v, plain_causal ? std::optional<at::Tensor>() : allowed, 0.0,
                                                plain_causal)
                   .transpose(1, 2)
                   .reshape({b, n, -1});
#endif
    }
    if (gpt2) {
      x = x + conv1d(attn_out.reshape({-1, c.hidden_size}), t(layer(i, "attn.c_proj.weight", c.family)),
                     t(layer(i, "attn.c_proj.bias", c.family)))
                  .view({b, n, c.hidden_size});
      at::Tensor h = at::layer_norm(x, {c.hidden_size}, t(layer(i, "ln_2.weight", c.family)),
                                    t(layer(i, "ln_2.bias", c.family)), c.norm_eps);
      at::Tensor up = conv1d(h.reshape({-1, c.hidden_size}), t(layer(i, "mlp.c_fc.weight", c.family)),
                             t(layer(i, "mlp.c_fc.bias", c.family)));
      x = x + conv1d(at::gelu(up, "tanh"), t(layer(i, "mlp.c_proj.weight", c.family)),
                     t(layer(i, "mlp.c_proj.bias", c.family)))
                  .view({b, n, c.hidden_size});
    } else {
      // Without autograd the residual stream and the gate are updated in place (the same kernels,
      // so the same numbers): four fewer fresh tensors per layer, each a round of page faults. (The
      // input a pipeline stage received belongs to its link: the first add makes x this pass's own.)
      const bool in_place = !at::GradMode::is_enabled();
      auto residual = [&](const at::Tensor& update) {
        x = in_place && x_is_ours ? x.add_(update) : x + update;
        x_is_ours = true;
      };
      residual(fast_linear(attn_out, t(layer(i, "self_attn.o_proj.weight", c.family)), {}, scratch_.get()));
      at::Tensor h = rms_norm(x, t(layer(i, "post_attention_layernorm.weight", c.family)), c.norm_eps);
      at::Tensor gate = fast_linear(h, t(layer(i, "mlp.gate_proj.weight", c.family)), {}, scratch_.get());
      at::Tensor up = fast_linear(h, t(layer(i, "mlp.up_proj.weight", c.family)), {}, scratch_.get());
      const at::Tensor act = in_place ? at::silu_(gate).mul_(up) : at::silu(gate) * up;
      residual(fast_linear(act, t(layer(i, "mlp.down_proj.weight", c.family)), {}, scratch_.get()));
    }
    if (gather_ != nullptr) x = gather_->release_layer(i, x);
  }
  if (!is_last_stage()) link_->hand_on(x);
  if (gather_ != nullptr) gather_->gather_head();
  if (gpt2) {
    return at::layer_norm(x, {c.hidden_size}, t("transformer.ln_f.weight"), t("transformer.ln_f.bias"), c.norm_eps);
  }
  return rms_norm(x, t("model.norm.weight"), c.norm_eps);
}

at::Tensor DecoderModel::logits(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache) const {
  ALN_CHECK(config_.head == Head::kCausalLm, "this model has a score head; use scores()");
  // Hidden states first: on a pipeline stage that is not the last the pass ends inside them (and
  // such a stage has no output weight).
  at::Tensor h = hidden_states(input_ids, attention_mask, cache);
  return fast_linear(h, output_weight(), {}, scratch_.get());
}

at::Tensor DecoderModel::output_logits(const at::Tensor& hidden) const {
  ALN_CHECK(config_.head == Head::kCausalLm, "this model has a score head; use scores()");
  return fast_linear(hidden, output_weight(), {}, scratch_.get());
}

at::Tensor DecoderModel::last_logits(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                     KvCache* cache) const {
  ALN_CHECK(config_.head == Head::kCausalLm, "this model has a score head; use scores()");
  at::Tensor h = hidden_states(input_ids, attention_mask, cache);
  return fast_linear(h.select(1, h.size(1) - 1), output_weight(), {}, scratch_.get());
}

at::Tensor DecoderModel::static_step_logits(const at::Tensor& input_ids, KvCache* cache) const {
  ALN_CHECK(config_.head == Head::kCausalLm, "this model has a score head; use scores()");
  ALN_CHECK(cache != nullptr && cache->step != nullptr, "a static decoding step needs cache->step");
  at::Tensor h = hidden_states(input_ids, at::Tensor(), cache);
  return fast_linear(h.select(1, 0), output_weight(), {}, scratch_.get());
}

at::Tensor DecoderModel::scores(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
  ALN_CHECK(config_.head == Head::kSequenceScore, "this model has no score head (score.weight)");
  at::Tensor h = hidden_states(input_ids, attention_mask);
  // Last non-padding token of each row, for left and right padding alike.
  const int64_t n = attention_mask.size(1);
  at::Tensor index = at::arange(n, attention_mask.options().dtype(at::kLong)).unsqueeze(0) * attention_mask.to(at::kLong);
  at::Tensor last = std::get<1>(index.max(1));
  at::Tensor picked = h.gather(1, last.view({-1, 1, 1}).expand({-1, 1, h.size(2)})).squeeze(1);  // [B, H]
  // Scores feed losses and rewards: in float32 when the pass computed in a half type (a [B, H] x
  // [H, labels] product, tiny), so rewards are not rounded to bfloat16's steps.
  const at::Tensor w = t("score.weight", Cast::kRows);
  if (picked.scalar_type() == at::kBFloat16 || picked.scalar_type() == at::kHalf) {
    return at::linear(picked.to(at::kFloat), w.to(at::kFloat));
  }
  return at::linear(picked, w);
}

TensorMap DecoderModel::checkpoint_tensors() const { return tensors_; }

int64_t DecoderModel::num_parameters() const {
  int64_t total = 0;
  for (const auto& [name, value] : tensors_) total += value.numel();
  return total;
}

double DecoderModel::forward_flops_per_token(int64_t context) const {
  const ModelConfig& c = config_;
  int64_t matmul_params = num_parameters();
  // Embedding lookups are not multiplies; the output projection is (it is counted once even if tied).
  matmul_params -= c.vocab_size * c.hidden_size;
  if (c.family == Family::kGpt2) matmul_params -= c.max_position * c.hidden_size;
  if (c.tie_embeddings && c.head == Head::kCausalLm) matmul_params += c.vocab_size * c.hidden_size;
  const double attention = 2.0 * c.num_layers * context * c.num_heads * c.head_dim;  // QK^T and AV
  return 2.0 * static_cast<double>(matmul_params) + 2.0 * attention;
}

DecoderModel DecoderModel::to(at::ScalarType dtype) const { return to(device(), dtype); }

at::Device DecoderModel::device() const {
  return tensors_.empty() ? at::Device(at::kCPU) : tensors_.begin()->second.device();
}

at::ScalarType DecoderModel::storage_dtype() const {
  return tensors_.empty() ? at::kFloat : tensors_.begin()->second.scalar_type();
}

DecoderModel DecoderModel::to(const at::Device& device, at::ScalarType dtype) const {
  ALN_CHECK(gather_ == nullptr, "to() on a model with sharded parameters: its layers are not here (gather the whole "
            "model first)");
  TensorMap out;
  // Always a copy: a frozen reference made with policy.to(kFloat) must not share storage with the
  // policy the optimizer updates in place (Tensor::to returns the tensor itself for the same dtype).
  for (const auto& [name, value] : tensors_) {
    out.emplace(name, value.detach().to(device, dtype, /*non_blocking=*/false, /*copy=*/true));
  }
  DecoderModel copy(config_, std::move(out));
  copy.first_layer_ = first_layer_;
  copy.end_layer_ = end_layer_;
  copy.compute_ = compute_;
  return copy;
}

int64_t DecoderModel::layer_of(const ModelConfig& c, const std::string& name) {
  const std::string prefix = c.family == Family::kGpt2 ? "transformer.h." : "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  return std::stoll(name.substr(prefix.size(), name.find('.', prefix.size()) - prefix.size()));
}

bool DecoderModel::stage_owns(const ModelConfig& c, const std::string& name, int64_t first, int64_t end) {
  const int64_t i = layer_of(c, name);
  if (i >= 0) return i >= first && i < end;
  const bool embedding =
      name == "transformer.wte.weight" || name == "transformer.wpe.weight" || name == "model.embed_tokens.weight";
  const bool output_embedding = c.tie_embeddings && c.head == Head::kCausalLm &&
                                (name == "transformer.wte.weight" || name == "model.embed_tokens.weight");
  if (embedding) return first == 0 || (end == c.num_layers && output_embedding);
  return end == c.num_layers;  // final norm, lm_head, score
}

DecoderModel DecoderModel::stage(int64_t first, int64_t end) && {
  ALN_CHECK(is_whole(), "stage(): the model is already a stage");
  ALN_CHECK(0 <= first && first < end && end <= config_.num_layers, "stage layers [", first, ", ", end,
            ") are not a non-empty range of the model's ", config_.num_layers, " layers");
  for (auto it = tensors_.begin(); it != tensors_.end();) {
    it = stage_owns(config_, it->first, first, end) ? std::next(it) : tensors_.erase(it);
  }
  first_layer_ = first;
  end_layer_ = end;
  return std::move(*this);
}

void DecoderModel::resize_vocabulary(int64_t new_vocab_size) {
  const int64_t old = config_.vocab_size;
  ALN_CHECK(new_vocab_size >= old, "cannot shrink the vocabulary from ", old, " to ", new_vocab_size);
  if (new_vocab_size == old) return;
  auto grow = [&](const std::string& name) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return;
    at::Tensor w = it->second.detach();
    at::Tensor rows = w.mean(0, /*keepdim=*/true).expand({new_vocab_size - old, w.size(1)});
    it->second = at::cat({w, rows}, 0).contiguous();
  };
  grow(config_.family == Family::kGpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight");
  if (!config_.tie_embeddings) grow("lm_head.weight");
  config_.vocab_size = new_vocab_size;
}

void DecoderModel::set_requires_grad(bool requires_grad) {
  if (gather_ != nullptr) {
    gather_->set_requires_grad(requires_grad);
    return;
  }
  for (auto& [name, value] : tensors_) value.set_requires_grad(requires_grad);
}

}  // namespace aln::model
