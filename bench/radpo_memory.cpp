// Peak memory and time of one Ra-DPO training step (forward + backward) at 512-token sequences
// with GPT-2's 50,257-token vocabulary: Aln's chunked path (trainers/dpo/token_level_pairs) against
// the direct way — full [positions, vocab] logits of both models kept for autograd, as the official
// PyTorch code does. One mode per process (peak RSS is per process); bench/radpo_memory.py runs the
// modes side by side and writes the JSON.
//   radpo_memory MODE [--pairs P] [--prompt N] [--response N] [--chunk C] [--hidden H]
//   MODE: chunked | direct
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "core/buffer/buffer.h"
#include "core/model/decoder.h"
#include "trainers/dpo/token_level_pairs.h"

namespace {

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // KiB on Linux
}

at::Tensor direct_loss(const aln::model::DecoderModel& policy, const aln::model::DecoderModel& reference,
                       const std::vector<const aln::buffer::Example*>& view, double mu, double beta, double alpha) {
  aln::buffer::SequenceBatch b = aln::buffer::collate_pairs(view, 0);
  const int64_t t = b.input_ids.size(1);
  at::Tensor logp = at::log_softmax(policy.logits(b.input_ids, b.attention_mask).narrow(1, 0, t - 1), -1);
  at::Tensor ref_logp;
  {
    at::NoGradGuard no_grad;
    ref_logp = at::log_softmax(reference.logits(b.input_ids, b.attention_mask).narrow(1, 0, t - 1), -1);
  }
  const at::Tensor mask = b.response_mask.narrow(1, 1, t - 1).to(at::kFloat);
  const at::Tensor y = b.input_ids.narrow(1, 1, t - 1).unsqueeze(2);
  const at::Tensor d = ref_logp - logp;
  const at::Tensor above = (d > at::quantile(d.detach(), 1 - mu, -1, true, "linear")).to(at::kFloat);
  const at::Tensor term = (ref_logp.exp() * d * above).sum(-1);
  const at::Tensor lr = ((logp.gather(2, y) - ref_logp.gather(2, y)).squeeze(2) * mask).sum(1);
  const at::Tensor div = (term * mask).sum(1);
  const int64_t n = static_cast<int64_t>(view.size());
  const at::Tensor h = lr.narrow(0, 0, n) - lr.narrow(0, n, n);
  const at::Tensor penalty = alpha * (div.narrow(0, n, n) - div.narrow(0, 0, n).detach());
  return -at::log_sigmoid(beta * (h - penalty)).mean();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: radpo_memory chunked|direct [--pairs P] [--prompt N] [--response N] [--chunk C]\n");
    return 2;
  }
  const std::string mode = argv[1];
  int64_t pairs = 2, prompt = 256, response = 256, chunk = 64, hidden = 64;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--pairs")
      pairs = v;
    else if (flag == "--prompt")
      prompt = v;
    else if (flag == "--response")
      response = v;
    else if (flag == "--chunk")
      chunk = v;
    else if (flag == "--hidden")
      hidden = v;
  }
  at::set_num_threads(1);
  aln::model::ModelConfig config;
  config.vocab_size = 50257;
  config.hidden_size = hidden;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = hidden / 4;
  config.intermediate_size = hidden * 3;
  config.max_position = prompt + response + 8;
  auto policy = aln::model::DecoderModel::random_init(config, 1);
  auto reference = aln::model::DecoderModel::random_init(config, 2);
  policy.set_requires_grad(true);
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int64_t> token(1, config.vocab_size - 1);
  auto draw = [&](int64_t n) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (auto& x : v) x = token(rng);
    return v;
  };
  std::vector<aln::buffer::Example> examples(static_cast<size_t>(pairs));
  for (auto& e : examples) {
    e.prompt = draw(prompt);
    e.chosen = draw(response);
    e.rejected = draw(response);
  }
  std::vector<const aln::buffer::Example*> view;
  for (const auto& e : examples) view.push_back(&e);
  const double baseline = peak_rss_mib();
  const auto start = std::chrono::steady_clock::now();
  double loss = 0;
  if (mode == "chunked") {
    aln::trainers::TokenLevelSettings s;
    s.divergence.kind = aln::kernels::TokenDivergence::kCvar;
    s.divergence.mu = 0.95;
    s.chunk = chunk;
    s.metric_name = "risk";
    auto ctx = aln::trainers::make_step_context(&policy, &reference, 0, 0);
    aln::trainers::LossOutput out = aln::trainers::token_level_pair_loss(view, ctx, s);
    out.loss.backward();
    loss = out.loss.item<double>();
  } else if (mode == "direct") {
    at::Tensor l = direct_loss(policy, reference, view, 0.95, 0.1, 0.5);
    l.backward();
    loss = l.item<double>();
  } else {
    std::fprintf(stderr, "radpo_memory: unknown mode %s\n", mode.c_str());
    return 2;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double peak = peak_rss_mib();
  double grad_norm = 0;
  for (const auto& [name, p] : policy.tensors()) {
    if (p.grad().defined()) grad_norm += p.grad().pow(2).sum().item<double>();
  }
  std::printf(
      "{\"mode\": \"%s\", \"pairs\": %lld, \"sequence_tokens\": %lld, \"scored_positions\": %lld, \"vocab\": %lld, "
      "\"chunk\": %lld, \"loss\": %.10g, \"grad_norm\": %.10g, \"seconds\": %.3f, \"baseline_rss_mib\": %.1f, "
      "\"peak_rss_mib\": %.1f, \"step_peak_mib\": %.1f}\n",
      mode.c_str(), static_cast<long long>(pairs), static_cast<long long>(prompt + response),
      static_cast<long long>(2 * pairs * response), static_cast<long long>(config.vocab_size),
      static_cast<long long>(mode == "chunked" ? chunk : 0), loss, std::sqrt(grad_norm), seconds, baseline, peak,
      peak - baseline);
  return 0;
}
