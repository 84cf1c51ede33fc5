#include "core/model/model_config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/json_guard.h"

namespace aln::model {
namespace {

using nlohmann::json;

absl::Status bad(const std::string& file, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", key, ": ", what));
}

// Reads an integer key; `fallback` < 0 means required.
absl::StatusOr<int64_t> get_int(const json& j, const std::string& key, const std::string& file, int64_t fallback,
                                const char* alt = nullptr) {
  const json* v = nullptr;
  if (j.contains(key)) v = &j.at(key);
  else if (alt != nullptr && j.contains(alt)) v = &j.at(alt);
  if (v == nullptr || v->is_null()) {
    if (fallback == INT64_MIN) return bad(file, key, "missing");
    return fallback;
  }
  if (!v->is_number_integer()) return bad(file, key, absl::StrCat("expected an integer, got ", json_excerpt(*v)));
  return v->get<int64_t>();
}

double get_double(const json& j, const std::string& key, double fallback) {
  return j.contains(key) && j.at(key).is_number() ? j.at(key).get<double>() : fallback;
}

int64_t first_token(const json& j, const std::string& key) {
  if (!j.contains(key)) return -1;
  const json& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_array() && !v.empty() && v.front().is_number_integer()) return v.front().get<int64_t>();
  return -1;
}

}  // namespace

absl::StatusOr<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& file) {
  json j;
  if (absl::Status s = parse_untrusted_json(json_text, &j); !s.ok())
    return bad(file, "(json)", std::string(s.message()));
  if (!j.is_object()) return bad(file, "(json)", "expected a JSON object");
  ModelConfig c;
  c.model_type = j.value("model_type", "");
  if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2") {
    c.family = Family::kLlama;
  } else if (c.model_type == "gpt2") {
    c.family = Family::kGpt2;
  } else {
    return bad(file, "model_type", absl::StrCat("unknown architecture '", c.model_type,
                                                "'; supported: llama, mistral, qwen2, gpt2"));
  }
  if (j.contains("architectures") && j.at("architectures").is_array()) {
    for (const auto& a : j.at("architectures")) {
      if (a.is_string() && a.get<std::string>().find("ForSequenceClassification") != std::string::npos) {
        c.head = Head::kSequenceScore;
      }
    }
  }
  constexpr int64_t kRequired = INT64_MIN;
  const bool gpt2 = c.family == Family::kGpt2;
  auto assign = [&](int64_t* out, absl::StatusOr<int64_t> v) -> absl::Status {
    if (!v.ok()) return v.status();
    *out = *v;
    return absl::OkStatus();
  };
  absl::Status s;
  if (!(s = assign(&c.vocab_size, get_int(j, "vocab_size", file, kRequired))).ok()) return s;
  if (!(s = assign(&c.hidden_size, get_int(j, gpt2 ? "n_embd" : "hidden_size", file, kRequired))).ok()) return s;
  if (!(s = assign(&c.num_layers, get_int(j, gpt2 ? "n_layer" : "num_hidden_layers", file, kRequired))).ok()) return s;
  if (!(s = assign(&c.num_heads, get_int(j, gpt2 ? "n_head" : "num_attention_heads", file, kRequired))).ok()) return s;
  if (!(s = assign(&c.num_kv_heads, get_int(j, "num_key_value_heads", file, c.num_heads))).ok()) return s;
  if (!(s = assign(&c.max_position, get_int(j, gpt2 ? "n_positions" : "max_position_embeddings", file, 2048))).ok()) return s;
  if (!(s = assign(&c.num_labels, get_int(j, "num_labels", file, -1))).ok()) return s;
  if (c.num_labels < 0) {
    c.num_labels = j.contains("id2label") && j.at("id2label").is_object() ? static_cast<int64_t>(j.at("id2label").size()) : 1;
  }
  if (gpt2) {
    if (!(s = assign(&c.intermediate_size, get_int(j, "n_inner", file, 4 * c.hidden_size))).ok()) return s;
    c.norm_eps = get_double(j, "layer_norm_epsilon", 1e-5);
    c.tie_embeddings = j.value("tie_word_embeddings", true);
    const std::string act = j.value("activation_function", "gelu_new");
    if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
      return bad(file, "activation_function", absl::StrCat("'", act, "' is not supported (gelu_new)"));
    }
  } else {
    if (!(s = assign(&c.intermediate_size, get_int(j, "intermediate_size", file, kRequired))).ok()) return s;
    c.norm_eps = get_double(j, "rms_norm_eps", 1e-6);
    c.tie_embeddings = j.value("tie_word_embeddings", false);
    c.qkv_bias = c.model_type == "qwen2" || j.value("attention_bias", false);
    const std::string act = j.value("hidden_act", "silu");
    if (act != "silu") return bad(file, "hidden_act", absl::StrCat("'", act, "' is not supported (silu)"));
    // transformers 5 nests RoPE settings in rope_parameters; older files use rope_theta + rope_scaling.
    const json rope = j.contains("rope_parameters") && j.at("rope_parameters").is_object() ? j.at("rope_parameters")
                      : j.contains("rope_scaling") && j.at("rope_scaling").is_object() ? j.at("rope_scaling")
                                                                                       : json::object();
    c.rope_theta = get_double(rope, "rope_theta", get_double(j, "rope_theta", 10000.0));
    const std::string type = rope.value("rope_type", rope.value("type", "default"));
    if (type == "llama3") {
      c.rope_scaling = RopeScaling::kLlama3;
      c.rope_factor = get_double(rope, "factor", 8.0);
      c.rope_low_freq_factor = get_double(rope, "low_freq_factor", 1.0);
      c.rope_high_freq_factor = get_double(rope, "high_freq_factor", 4.0);
      c.rope_original_max_position = static_cast<int64_t>(get_double(rope, "original_max_position_embeddings", 8192));
    } else if (type != "default") {
      return bad(file, "rope_parameters.rope_type", absl::StrCat("'", type, "' is not supported (default, llama3)"));
    }
  }
  if (!(s = assign(&c.head_dim, get_int(j, "head_dim", file, c.num_heads > 0 ? c.hidden_size / c.num_heads : 0))).ok()) {
    return s;
  }
  c.bos_token_id = first_token(j, "bos_token_id");
  c.eos_token_id = first_token(j, "eos_token_id");
  c.pad_token_id = first_token(j, "pad_token_id");
  s = validate(c, file);
  if (!s.ok()) return s;
  return c;
}

absl::StatusOr<ModelConfig> load_hf_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the model config"));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_hf_config(text.str(), path);
}

absl::Status validate(const ModelConfig& c, const std::string& file) {
  const bool gpt2 = c.family == Family::kGpt2;
  for (auto [value, key] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, gpt2 ? "n_embd" : "hidden_size"},
                            {c.num_layers, gpt2 ? "n_layer" : "num_hidden_layers"},
                            {c.num_heads, gpt2 ? "n_head" : "num_attention_heads"},
                            {c.num_kv_heads, "num_key_value_heads"}, {c.head_dim, "head_dim"},
                            {c.intermediate_size, gpt2 ? "n_inner" : "intermediate_size"},
                            {c.max_position, gpt2 ? "n_positions" : "max_position_embeddings"}}) {
    if (value <= 0) return bad(file, key, absl::StrCat("must be positive, got ", value));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return bad(file, "num_key_value_heads",
               absl::StrCat(c.num_kv_heads, " does not divide num_attention_heads ", c.num_heads));
  }
  if (gpt2 && c.hidden_size % c.num_heads != 0) {
    return bad(file, "n_head", absl::StrCat(c.num_heads, " does not divide n_embd ", c.hidden_size));
  }
  if (c.head_dim % 2 != 0 && !gpt2) return bad(file, "head_dim", "must be even for rotary embeddings");
  return absl::OkStatus();
}

std::string to_hf_config_json(const ModelConfig& c) {
  json j;
  const bool score = c.head == Head::kSequenceScore;
  if (c.family == Family::kGpt2) {
    j = {{"model_type", "gpt2"}, {"architectures", {score ? "GPT2ForSequenceClassification" : "GPT2LMHeadModel"}},
         {"vocab_size", c.vocab_size}, {"n_embd", c.hidden_size}, {"n_layer", c.num_layers}, {"n_head", c.num_heads},
         {"n_positions", c.max_position}, {"n_inner", c.intermediate_size}, {"layer_norm_epsilon", c.norm_eps},
         {"activation_function", "gelu_new"}, {"tie_word_embeddings", c.tie_embeddings}};
  } else {
    std::string arch = c.model_type == "qwen2" ? "Qwen2" : c.model_type == "mistral" ? "Mistral" : "Llama";
    json rope = {{"rope_theta", c.rope_theta}, {"rope_type", "default"}};
    if (c.rope_scaling == RopeScaling::kLlama3) {
      rope = {{"rope_theta", c.rope_theta}, {"rope_type", "llama3"}, {"factor", c.rope_factor},
              {"low_freq_factor", c.rope_low_freq_factor}, {"high_freq_factor", c.rope_high_freq_factor},
              {"original_max_position_embeddings", c.rope_original_max_position}};
    }
    j = {{"model_type", c.model_type}, {"architectures", {arch + (score ? "ForSequenceClassification" : "ForCausalLM")}},
         {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_layers},
         {"num_attention_heads", c.num_heads}, {"num_key_value_heads", c.num_kv_heads}, {"head_dim", c.head_dim},
         {"intermediate_size", c.intermediate_size}, {"max_position_embeddings", c.max_position},
         {"rms_norm_eps", c.norm_eps}, {"hidden_act", "silu"}, {"tie_word_embeddings", c.tie_embeddings},
         {"rope_theta", c.rope_theta}, {"rope_parameters", rope}};
    if (c.model_type != "qwen2") j["attention_bias"] = c.qkv_bias;
  }
  if (score) j["num_labels"] = c.num_labels;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  j["torch_dtype"] = "float32";
  return j.dump(2);
}

int64_t parameter_count(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t i = c.intermediate_size, v = c.vocab_size;
  int64_t layer = 0, outside = 0;
  if (c.family == Family::kGpt2) {
    // Two LayerNorms (weight and bias), fused q/k/v and the output projection, the MLP, all with biases.
    layer = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h);
    outside = v * h + c.max_position * h + 2 * h;  // token and position embeddings, final LayerNorm
  } else {
    // Two RMSNorms, q/k/v/o (biases on q/k/v with qkv_bias), the gated MLP.
    layer = 2 * h + h * q + 2 * h * kv + q * h + (c.qkv_bias ? q + 2 * kv : 0) + 3 * h * i;
    outside = v * h + h;  // embedding, final norm
  }
  const int64_t head = c.head == Head::kSequenceScore ? c.num_labels * h : (c.tie_embeddings ? 0 : v * h);
  return c.num_layers * layer + outside + head;
}

ModelConfig from_job_spec(const aln::v1::ModelConfig& spec) {
  ModelConfig c;
  c.family = spec.architecture() == aln::v1::GPT2 ? Family::kGpt2 : Family::kLlama;
  c.model_type = c.family == Family::kGpt2 ? "gpt2" : (spec.qkv_bias() ? "qwen2" : "llama");
  c.vocab_size = spec.vocab_size();
  c.hidden_size = spec.hidden_size();
  c.num_layers = spec.num_layers();
  c.num_heads = spec.num_heads();
  c.num_kv_heads = spec.num_kv_heads() == 0 ? spec.num_heads() : spec.num_kv_heads();
  c.head_dim = spec.hidden_size() / spec.num_heads();
  c.intermediate_size = spec.intermediate_size();
  c.max_position = spec.max_position();
  c.rope_theta = spec.rope_theta();
  c.tie_embeddings = spec.tie_embeddings();
  c.qkv_bias = spec.qkv_bias();
  c.norm_eps = c.family == Family::kGpt2 ? 1e-5 : 1e-6;
  return c;
}

}  // namespace aln::model
