#include "core/model/generation.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <limits>

#include "core/error.h"

namespace aln::model {

at::Tensor filter_logits(const at::Tensor& logits, int64_t top_k, double top_p) {
  at::Tensor out = logits;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (top_k > 0 && top_k < logits.size(-1)) {
    at::Tensor kth = std::get<0>(out.topk(top_k, -1)).narrow(-1, top_k - 1, 1);
    out = out.masked_fill(out < kth, neg_inf);
  }
  if (top_p < 1.0) {
    auto [sorted, order] = out.sort(-1, /*descending=*/true);
    at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    // Drop a token when the mass before it already reaches top_p (the first token always stays).
    at::Tensor drop_sorted = (cumulative - sorted.softmax(-1)) >= top_p;
    at::Tensor drop = at::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
    out = out.masked_fill(drop, neg_inf);
  }
  return out;
}

namespace {

// A seeded generator on the device the logits live on, so sampling draws there and nothing crosses
// to the host to sample. (A GPU's generator is a different algorithm from the CPU's: the same seed
// samples different tokens on a GPU than on the CPU, as in PyTorch; each is repeatable.)
at::Generator sampling_generator(const at::Device& device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  ALN_CHECK(device.is_cuda(), "sampling on ", device.str(), " is not supported (CPU and CUDA are)");
  at::Generator gen = at::detail::getCUDAHooks().getNewGenerator(device.index());
  gen.set_current_seed(seed);
  return gen;
}

}  // namespace

GenerationOutput generate(const DecoderModel& model, const at::Tensor& host_or_device_ids,
                          const at::Tensor& host_or_device_mask, const GenerationOptions& options) {
  // Mixed precision: one copy in the compute dtype for the whole call, instead of a cast of every
  // weight at every token (the same bits; the copy costs half the float32 weights' memory).
  if (model.compute_dtype() != at::ScalarType::Undefined && model.compute_dtype() != model.storage_dtype() &&
      model.param_gather() == nullptr && model.is_whole()) {
    at::NoGradGuard no_grad;
    DecoderModel cast = model.to(model.device(), model.compute_dtype());
    cast.set_compute_dtype(at::ScalarType::Undefined);
    return generate(cast, host_or_device_ids, host_or_device_mask, options);
  }
  // Prompts laid out on the host go to the model's device once, before the first pass.
  const at::Tensor prompt_ids = host_or_device_ids.to(model.device());
  const at::Tensor prompt_mask = host_or_device_mask.to(model.device());
  ALN_CHECK(prompt_ids.dim() == 2 && prompt_ids.sizes() == prompt_mask.sizes(), "prompt ids and mask must be [B, T]");
  ALN_CHECK(options.max_new_tokens >= 0, "max_new_tokens must be >= 0");
  ALN_CHECK(options.decoding == Decoding::kGreedy || options.temperature > 0, "temperature must be > 0");
  // Right padding would put pad tokens between the prompt and the new tokens.
  ALN_CHECK(prompt_mask.select(1, prompt_mask.size(1) - 1).all().item<bool>(),
            "prompts must be left-padded (the last column of the mask must be all ones)");
  const int64_t b = prompt_ids.size(0);
  KvCache cache;
  cache.capacity = prompt_ids.size(1) + std::max<int64_t>(options.max_new_tokens, 1);
  at::Tensor mask = prompt_mask.to(at::kLong);
  at::Tensor step_logits = model.last_logits(prompt_ids, mask, &cache);
  at::Generator gen = sampling_generator(step_logits.device(), options.seed);
  std::vector<std::vector<int64_t>> generated(b);
  std::vector<at::Tensor> tokens, logprobs;
  // Which rows have stopped: decided on the host from the one copy of each step's tokens, and
  // mirrored on the device (copied there only when a row stops) for the masking below.
  std::vector<char> finished(static_cast<size_t>(b), 0);
  int64_t finished_rows = 0;
  at::Tensor done = at::zeros({b}, prompt_ids.options().dtype(at::kBool));
  at::Tensor lengths = at::zeros({b}, prompt_ids.options().dtype(at::kLong));
  // The steps this call's rows took (fewer than were taken when other ranks went on).
  size_t own_steps = 0;
  bool own_ended = false;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor scaled = step_logits.to(at::kFloat);
    if (options.decoding == Decoding::kSample) scaled = scaled / options.temperature;
    at::Tensor log_probs = scaled.log_softmax(-1);
    at::Tensor next;
    if (options.decoding == Decoding::kGreedy) {
      next = scaled.argmax(-1);
    } else {
      at::Tensor filtered = filter_logits(scaled, options.top_k, options.top_p);
      next = at::multinomial(filtered.softmax(-1), 1, /*replacement=*/false, gen).squeeze(1);
    }
    next = next.masked_fill(done, options.pad_token_id);
    at::Tensor chosen = log_probs.gather(1, next.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0);
    tokens.push_back(next);
    logprobs.push_back(chosen);
    lengths += (~done).to(at::kLong);
    // The decoding step's one device-to-host copy: the tokens just chosen.
    const at::Tensor next_host = next.to(at::kCPU).contiguous();
    const int64_t* next_acc = next_host.data_ptr<int64_t>();
    bool stopped_now = false;
    for (int64_t r = 0; r < b; ++r) {
      if (finished[static_cast<size_t>(r)]) continue;
      generated[r].push_back(next_acc[r]);
      bool stop = false;
      for (int64_t s : options.stop_tokens) stop = stop || next_acc[r] == s;
      if (!stop && options.stop_condition) stop = options.stop_condition(r, generated[r]);
      if (stop) {
        finished[static_cast<size_t>(r)] = 1;
        ++finished_rows;
        stopped_now = true;
      }
    }
    if (!own_ended) own_steps = tokens.size();
    own_ended = finished_rows == b;
    if (step + 1 == options.max_new_tokens) break;
    if (options.all_ended ? options.all_ended(finished_rows == b) : finished_rows == b) break;
    if (stopped_now) {
      done = at::from_blob(finished.data(), {b}, at::kChar).to(at::kBool).to(done.device());
    }
    mask = at::cat({mask, at::ones({b, 1}, mask.options())}, 1);
    step_logits = model.last_logits(next.unsqueeze(1), mask, &cache);
  }
  tokens.resize(std::min(tokens.size(), own_steps));
  logprobs.resize(tokens.size());
  GenerationOutput out;
  out.tokens = tokens.empty() ? at::zeros({b, 0}, prompt_ids.options().dtype(at::kLong)) : at::stack(tokens, 1);
  out.logprobs = logprobs.empty() ? at::zeros({b, 0}, prompt_ids.options().dtype(at::kFloat)) : at::stack(logprobs, 1);
  out.lengths = lengths;
  return out;
}

}  // namespace aln::model
