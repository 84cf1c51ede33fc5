// Aln's side of bench/model_vs_transformers.py: loads a Hugging Face model directory, checks that
// greedy generation gives the expected tokens (written by the Python side), then times the forward
// pass and KV-cache generation and prints JSON.
//   model_bench DIR THREADS BATCH PROMPT_LEN NEW_TOKENS FORWARD_LEN REPEATS
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

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
  if (argc != 8) {
    std::fprintf(stderr, "usage: model_bench DIR THREADS BATCH PROMPT_LEN NEW_TOKENS FORWARD_LEN REPEATS\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int threads = std::atoi(argv[2]);
  const int64_t batch = std::atoll(argv[3]), prompt_len = std::atoll(argv[4]), new_tokens = std::atoll(argv[5]),
                forward_len = std::atoll(argv[6]);
  const int repeats = std::atoi(argv[7]);
  at::set_num_threads(threads);
  auto model = aln::model::load_hf_model(dir);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  // Inputs written by the Python side, so both run the same tokens.
  at::Tensor prompt = at::empty({batch, prompt_len}, at::kLong);
  std::ifstream(dir + "/bench_prompt.bin", std::ios::binary).read(static_cast<char*>(prompt.data_ptr()), prompt.nbytes());
  at::Tensor expected = at::empty({batch, new_tokens}, at::kLong);
  std::ifstream(dir + "/bench_expected.bin", std::ios::binary)
      .read(static_cast<char*>(expected.data_ptr()), expected.nbytes());
  at::NoGradGuard no_grad;
  aln::model::GenerationOptions options;
  options.max_new_tokens = new_tokens;
  const at::Tensor mask = at::ones_like(prompt);
  const at::Tensor got = aln::model::generate(*model, prompt, mask, options).tokens;
  const bool correct = at::equal(got, expected);
  std::vector<double> gen_times, fwd_times;
  at::Tensor fwd_ids = at::randint(model->config().vocab_size, {batch, forward_len}, at::kLong);
  at::Tensor fwd_mask = at::ones_like(fwd_ids);
  model->logits(fwd_ids, fwd_mask);  // warm-up
  for (int r = 0; r < repeats; ++r) {
    gen_times.push_back(seconds([&] { aln::model::generate(*model, prompt, mask, options); }));
    fwd_times.push_back(seconds([&] { model->logits(fwd_ids, fwd_mask); }));
  }
  const double gen_best = *std::min_element(gen_times.begin(), gen_times.end());
  const double fwd_best = *std::min_element(fwd_times.begin(), fwd_times.end());
  std::printf("{\"correct\": %s, \"generate_s\": %.6f, \"generate_tokens_per_s\": %.2f, \"forward_s\": %.6f, "
              "\"forward_tokens_per_s\": %.2f, \"generate_best_s\": %.6f, \"forward_best_s\": %.6f}\n",
              correct ? "true" : "false", median(gen_times), batch * new_tokens / median(gen_times),
              median(fwd_times), batch * forward_len / median(fwd_times), gen_best, fwd_best);
  return correct ? 0 : 1;
}
