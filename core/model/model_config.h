#pragma once
// Decoder language-model configuration in the Hugging Face vocabulary (config.json), covering the
// Llama family (Llama 2/3, Mistral, Qwen2, SmolLM, TinyLlama) and GPT-2.
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"

namespace aln::model {

enum class Family { kLlama, kGpt2 };
enum class RopeScaling { kNone, kLlama3 };
enum class Head { kCausalLm, kSequenceScore };  // *ForCausalLM or *ForSequenceClassification

struct ModelConfig {
  Family family = Family::kLlama;
  std::string model_type = "llama";  // as written in config.json: llama, mistral, qwen2, gpt2
  Head head = Head::kCausalLm;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_position = 0;
  int64_t num_labels = 1;  // score head outputs
  double norm_eps = 1e-6;  // rms_norm_eps (Llama) or layer_norm_epsilon (GPT-2)
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::kNone;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;
  bool tie_embeddings = false;
  bool qkv_bias = false;  // Qwen2 (and attention_bias in Llama configs)
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;
};

// Parses config.json text; `file` only names the source in errors ("config.json: num_heads: ...").
absl::StatusOr<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& file);
absl::StatusOr<ModelConfig> load_hf_config(const std::string& path);

// config.json that transformers reads back into the same model.
std::string to_hf_config_json(const ModelConfig& config);

// The job spec's from-scratch model description.
ModelConfig from_job_spec(const aln::v1::ModelConfig& spec);

// Parameters the model holds (DecoderModel::expected_shapes counted without building it; a tied
// output projection counted once): for memory plans made where no model is loaded (the launcher).
int64_t parameter_count(const ModelConfig& config);

// Internal consistency (divisibility, positive sizes); messages name the config key.
absl::Status validate(const ModelConfig& config, const std::string& file);

}  // namespace aln::model
