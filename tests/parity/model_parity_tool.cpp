// Test helper for tests/parity/model_parity.py: reads a model exported by the Python side
// (config.json written by transformers + raw float32 tensors listed in manifest.json), runs Aln's
// DecoderModel on the given batch and writes logits (or scores) and greedy generations back.
// The raw-tensor exchange is test scaffolding only; checkpoints use safetensors.
#include <cstdio>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/model/decoder.h"
#include "core/model/generation.h"
#include "core/model/hf_checkpoint.h"

namespace {

at::Tensor read_raw(const std::string& path, std::vector<int64_t> shape, at::ScalarType dtype) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  at::Tensor t = at::empty(shape, dtype);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (in.gcount() != static_cast<std::streamsize>(t.nbytes())) throw std::runtime_error("short read " + path);
  return t;
}

void write_raw(const std::string& path, const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

int run(const std::string& dir) {
  std::ifstream manifest_file(dir + "/manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(manifest_file);
  auto config = aln::model::load_hf_config(dir + "/config.json");
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  aln::model::TensorMap tensors;
  for (const auto& entry : manifest["tensors"]) {
    tensors[entry["name"]] = read_raw(dir + "/" + entry["file"].get<std::string>(),
                                      entry["shape"].get<std::vector<int64_t>>(), at::kFloat);
  }
  auto model = aln::model::DecoderModel::from_tensors(*config, tensors);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const auto shape = manifest["batch_shape"].get<std::vector<int64_t>>();
  at::Tensor ids = read_raw(dir + "/input_ids.bin", shape, at::kLong);
  at::Tensor mask = read_raw(dir + "/attention_mask.bin", shape, at::kLong);
  if (config->head == aln::model::Head::kSequenceScore) {
    write_raw(dir + "/aln_scores.bin", model->scores(ids, mask));
    return 0;
  }
  write_raw(dir + "/aln_logits.bin", model->logits(ids, mask));
  if (manifest.contains("generate_new_tokens")) {
    const auto gshape = manifest["generate_shape"].get<std::vector<int64_t>>();
    at::Tensor prompt = read_raw(dir + "/generate_ids.bin", gshape, at::kLong);
    at::Tensor prompt_mask = read_raw(dir + "/generate_mask.bin", gshape, at::kLong);
    aln::model::GenerationOptions options;
    options.max_new_tokens = manifest["generate_new_tokens"].get<int64_t>();
    write_raw(dir + "/aln_generated.bin", aln::model::generate(*model, prompt, prompt_mask, options).tokens);
  }
  return 0;
}

}  // namespace

// `checkpoint IN OUT SHARD_BYTES DTYPE`: loads a Hugging Face directory, writes logits of the batch in
// IN (input_ids.bin / attention_mask.bin, shape in batch.json) to IN/aln_logits.bin, and saves the
// model to OUT with Aln's writer.
int checkpoint(const std::string& in, const std::string& out, int64_t shard_bytes, const std::string& dtype) {
  auto model = aln::model::load_hf_model(in);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 3;
  }
  std::ifstream batch_file(in + "/batch.json");
  nlohmann::json batch = nlohmann::json::parse(batch_file);
  const auto shape = batch["shape"].get<std::vector<int64_t>>();
  at::Tensor ids = read_raw(in + "/input_ids.bin", shape, at::kLong);
  at::Tensor mask = read_raw(in + "/attention_mask.bin", shape, at::kLong);
  write_raw(in + "/aln_logits.bin", model->logits(ids, mask));
  const at::ScalarType type = dtype == "bfloat16" ? at::kBFloat16 : dtype == "float16" ? at::kHalf : at::kFloat;
  absl::Status s = aln::model::save_hf_model(*model, out, type, shard_bytes);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "checkpoint") {
    try {
      return checkpoint(argv[2], argv[3], std::atoll(argv[4]), argv[5]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "model_parity_tool: %s\n", e.what());
      return 1;
    }
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: model_parity_tool DIR | checkpoint IN OUT SHARD_BYTES DTYPE\n");
    return 2;
  }
  try {
    return run(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_parity_tool: %s\n", e.what());
    return 1;
  }
}
