// Aln's side of bench/model_vs_transformers.py: loads a Hugging Face model directory, checks that
// greedy generation gives the expected tokens (written by the Python side), then times the forward
// pass and KV-cache generation and prints JSON. On a GPU (bench/gpu_generate.py) the model runs in
// DTYPE there, the decoding steps as STEPS says (auto: CUDA graphs; dynamic; static), and a token
// mismatch is reported as the share of tokens that match instead of failing (bfloat16 kernels differ).
//   model_bench DIR THREADS BATCH PROMPT_LEN NEW_TOKENS FORWARD_LEN REPEATS [DEVICE DTYPE STEPS]
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include "core/model/device.h"
#include "core/model/generation.h"
#include "core/model/hf_checkpoint.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename Fn>
double seconds(Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8 && argc != 11) {
    std::fprintf(stderr,
                 "usage: model_bench DIR THREADS BATCH PROMPT_LEN NEW_TOKENS FORWARD_LEN REPEATS "
                 "[cpu|cuda float32|bfloat16 auto|dynamic|static]\n");
    return 2;
  }
  const std::string device_name = argc == 11 ? argv[8] : "cpu", dtype_name = argc == 11 ? argv[9] : "float32",
                    steps_name = argc == 11 ? argv[10] : "auto";
  const std::string dir = argv[1];
  const int threads = std::atoi(argv[2]);
  const int64_t batch = std::atoll(argv[3]), prompt_len = std::atoll(argv[4]), new_tokens = std::atoll(argv[5]),
                forward_len = std::atoll(argv[6]);
  const int repeats = std::atoi(argv[7]);
  at::set_num_threads(threads);
  auto loaded = aln::model::load_hf_model(dir);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  c10::Device device(c10::kCPU);
  if (device_name == "cuda") {
    auto gpu = aln::model::cuda_device_for(0);
    if (!gpu.ok()) {
      std::fprintf(stderr, "%s\n", std::string(gpu.status().message()).c_str());
      return 1;
    }
    device = *gpu;
  }
  const at::ScalarType dtype = dtype_name == "bfloat16" ? at::kBFloat16 : at::kFloat;
  auto model = std::make_unique<aln::model::DecoderModel>(loaded->to(device, dtype));
  // Inputs written by the Python side, so both run the same tokens.
  at::Tensor prompt = at::empty({batch, prompt_len}, at::kLong);
  std::ifstream(dir + "/bench_prompt.bin", std::ios::binary).read(static_cast<char*>(prompt.data_ptr()), prompt.nbytes());
  at::Tensor expected = at::empty({batch, new_tokens}, at::kLong);
  std::ifstream(dir + "/bench_expected.bin", std::ios::binary)
      .read(static_cast<char*>(expected.data_ptr()), expected.nbytes());
  at::NoGradGuard no_grad;
  aln::model::GenerationOptions options;
  options.max_new_tokens = new_tokens;
  options.steps = steps_name == "dynamic"  ? aln::model::GenerationOptions::Steps::kDynamic
                  : steps_name == "static" ? aln::model::GenerationOptions::Steps::kStatic
                                           : aln::model::GenerationOptions::Steps::kAuto;
  prompt = prompt.to(device);
  const at::Tensor mask = at::ones_like(prompt);
  const aln::model::GenerationOutput first = aln::model::generate(*model, prompt, mask, options);
  const at::Tensor got = first.tokens.cpu();  // (a copy to the host: the work is done when it returns)
  const bool correct = at::equal(got, expected);
  const double match = got.sizes() == expected.sizes() ? got.eq(expected).to(at::kDouble).mean().item<double>() : 0.0;
  if (!first.graph_error.empty()) std::fprintf(stderr, "model_bench: %s\n", first.graph_error.c_str());
  std::vector<double> gen_times, fwd_times;
  at::Tensor fwd_ids = at::randint(model->config().vocab_size, {batch, forward_len}, at::kLong).to(device);
  at::Tensor fwd_mask = at::ones_like(fwd_ids);
  // On a GPU a timed call ends with one element read back, which waits for the device's work.
  auto done = [&](const at::Tensor& t) {
    if (device.is_cuda()) t.reshape(-1)[0].item<double>();
  };
  done(model->logits(fwd_ids, fwd_mask));  // warm-up
  for (int r = 0; r < repeats; ++r) {
    gen_times.push_back(seconds([&] { done(aln::model::generate(*model, prompt, mask, options).tokens); }));
    fwd_times.push_back(seconds([&] { done(model->logits(fwd_ids, fwd_mask)); }));
  }
  const double gen_best = *std::min_element(gen_times.begin(), gen_times.end());
  const double fwd_best = *std::min_element(fwd_times.begin(), fwd_times.end());
  std::printf(
      "{\"correct\": %s, \"token_match\": %.6f, \"replayed_graph\": %s, \"generate_s\": %.6f, "
      "\"generate_tokens_per_s\": %.2f, \"forward_s\": %.6f, "
      "\"forward_tokens_per_s\": %.2f, \"generate_best_s\": %.6f, \"forward_best_s\": %.6f}\n",
      correct ? "true" : "false", match, first.replayed_graph ? "true" : "false", median(gen_times),
      batch * new_tokens / median(gen_times), median(fwd_times), batch * forward_len / median(fwd_times), gen_best,
      fwd_best);
  return correct || device_name != "cpu" ? 0 : 1;
}
