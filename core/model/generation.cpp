#include "core/model/generation.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/DeviceGuard.h>

#include <limits>

#include "core/error.h"
#include "core/model/cuda_graph.h"

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

// Rows' generated tokens on the host, for a stop_condition (host code that reads them): one copy of
// each step's tokens.
class HostRows {
 public:
  explicit HostRows(int64_t rows) : generated_(static_cast<size_t>(rows)), ended_(static_cast<size_t>(rows), 0) {}

  // Takes the step's tokens [B] of the rows still going; true when a row ended with them.
  bool take(const at::Tensor& next, const GenerationOptions& options) {
    const at::Tensor next_host = next.to(at::kCPU).contiguous();
    const int64_t* acc = next_host.data_ptr<int64_t>();
    bool ended_now = false;
    for (size_t r = 0; r < generated_.size(); ++r) {
      if (ended_[r]) continue;
      generated_[r].push_back(acc[r]);
      bool stop = false;
      for (int64_t s : options.stop_tokens) stop = stop || acc[r] == s;
      if (!stop) stop = options.stop_condition(static_cast<int64_t>(r), generated_[r]);
      if (stop) {
        ended_[r] = 1;
        ++ended_rows_;
        ended_now = true;
      }
    }
    return ended_now;
  }
  // [B] bool on the host: the rows that have ended.
  at::Tensor ended_mask() {
    return at::from_blob(ended_.data(), {static_cast<int64_t>(ended_.size())}, at::kChar).to(at::kBool);
  }
  bool all_ended() const { return ended_rows_ == generated_.size(); }

 private:
  std::vector<std::vector<int64_t>> generated_;
  std::vector<char> ended_;
  size_t ended_rows_ = 0;
};

// The decoding steps after the prompt's pass, in one of the three shapes of GenerationOptions::Steps.
class DecodingSteps {
 public:
  DecodingSteps(const DecoderModel& model, KvCache& cache, const at::Tensor& prompt_mask,
                GenerationOptions::Steps steps)
      : model_(model), cache_(cache), mask_(prompt_mask) {
    const bool on_gpu = prompt_mask.is_cuda() && model.param_gather() == nullptr;
    graph_wanted_ = steps == GenerationOptions::Steps::kAuto && on_gpu && CudaGraph::available().ok();
    if (!graph_wanted_ && steps != GenerationOptions::Steps::kStatic) return;
    fixed_ = true;
    const int64_t b = prompt_mask.size(0), t = prompt_mask.size(1);
    step_.allowed = at::zeros({b, 1, 1, cache.capacity}, prompt_mask.options().dtype(at::kBool));
    step_.allowed.narrow(3, 0, t).copy_(prompt_mask.to(at::kBool).reshape({b, 1, 1, t}));
    step_.positions = prompt_mask.sum(1, /*keepdim=*/true);  // the next token's: the real tokens so far
    step_.write_at = at::full({1}, t, prompt_mask.options().dtype(at::kLong));
    ids_ = at::zeros({b, 1}, prompt_mask.options().dtype(at::kLong));
    cache_.step = &step_;
  }
  ~DecodingSteps() { cache_.step = nullptr; }
  DecodingSteps(const DecodingSteps&) = delete;
  DecodingSteps& operator=(const DecodingSteps&) = delete;

  // Whether the steps are being replayed from a CUDA graph; why not, when a capture failed.
  bool replaying() const { return graph_ != nullptr; }
  const std::string& graph_error() const { return graph_error_; }

  // The logits after `next` [B] (the tokens just chosen).
  at::Tensor after(const at::Tensor& next) {
    if (!fixed_) {
      mask_ = at::cat({mask_, at::ones({mask_.size(0), 1}, mask_.options())}, 1);
      return model_.last_logits(next.unsqueeze(1), mask_, &cache_);
    }
    // In place, so that a graph's replays see them: the token, and its position made visible.
    ids_.copy_(next.unsqueeze(1));
    step_.allowed.index_fill_(3, step_.write_at, true);
    at::Tensor logits;
    // A graph is captured and replayed on the current device's streams: the model's device.
    c10::OptionalDeviceGuard on_device;
    if (graph_wanted_) on_device.reset_device(ids_.device());
    if (graph_wanted_ && graph_ == nullptr) capture();
    if (graph_ != nullptr) {
      const absl::Status s = graph_->replay();
      ALN_CHECK(s.ok(), s.message());
      logits = logits_;
    } else {
      logits = model_.static_step_logits(ids_, &cache_);
    }
    step_.positions.add_(1);
    step_.write_at.add_(1);
    ++cache_.filled;
    return logits;
  }

 private:
  // The step, captured at its first use (the warm-up run and the capture recompute the same step, so
  // running it twice changes nothing). A capture that fails leaves the steps static and eager.
  void capture() {
    auto captured = CudaGraph::capture([this] { logits_ = model_.static_step_logits(ids_, &cache_); });
    if (captured.ok()) {
      graph_ = std::move(*captured);
    } else {
      graph_wanted_ = false;
      graph_error_ = std::string(captured.status().message());
      logits_ = at::Tensor();
    }
  }

  const DecoderModel& model_;
  KvCache& cache_;
  at::Tensor mask_;  // dynamic steps: the attention mask so far
  bool fixed_ = false;
  bool graph_wanted_ = false;
  std::string graph_error_;
  KvCache::StaticStep step_;
  at::Tensor ids_;  // [B, 1]: the step's input, in place
  std::unique_ptr<CudaGraph> graph_;
  at::Tensor logits_;  // the captured step's output, rewritten by each replay (released before the graph)
};

}  // namespace

GenerationOutput generate(const DecoderModel& model, const at::Tensor& host_or_device_ids,
                          const at::Tensor& host_or_device_mask, const GenerationOptions& options) {
  // No autograd in decoding (a captured step would otherwise record a graph of its own).
  at::NoGradGuard no_grad;
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
  const at::Tensor mask = prompt_mask.to(at::kLong);
  at::Tensor step_logits = model.last_logits(prompt_ids, mask, &cache);
  DecodingSteps steps(model, cache, mask, options.steps);
  at::Generator gen = sampling_generator(step_logits.device(), options.seed);
  // Stop tokens are matched on the device, so a step reads nothing back unless it checks whether the
  // rows have all ended; a stop_condition (host code over each row's tokens) needs them every step.
  HostRows host(options.stop_condition ? b : 0);
  const bool on_host = static_cast<bool>(options.stop_condition);
  const int64_t check_every = on_host                   ? 1
                              : options.check_every > 0 ? options.check_every
                              : step_logits.is_cpu()    ? 1
                                                        : 8;
  const at::Tensor stop_ids =
      options.stop_tokens.empty() ? at::Tensor() : at::tensor(options.stop_tokens, at::kLong).to(prompt_ids.device());
  std::vector<at::Tensor> tokens, logprobs;
  at::Tensor done = at::zeros({b}, prompt_ids.options().dtype(at::kBool));  // rows that have ended
  at::Tensor lengths = at::zeros({b}, prompt_ids.options().dtype(at::kLong));
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
    bool checked = false, ended_here = false;
    if (on_host) {
      if (host.take(next, options)) done = host.ended_mask().to(done.device());
      checked = true;
      ended_here = host.all_ended();
    } else {
      if (stop_ids.defined()) done = done.logical_or(at::isin(next, stop_ids));
      if ((step + 1) % check_every == 0) {
        checked = true;
        ended_here = done.all().item<bool>();  // the step's one host read, every check_every steps
      }
    }
    if (step + 1 == options.max_new_tokens) break;
    if (checked && (options.all_ended ? options.all_ended(ended_here) : ended_here)) break;
    step_logits = steps.after(next);
  }
  // This call's own steps: until its last row ended (its length counts the stop token), fewer than
  // were taken when other ranks went on or the ends were checked every few steps.
  const auto own_steps = static_cast<size_t>(b > 0 && !tokens.empty() ? lengths.max().item<int64_t>() : 0);
  tokens.resize(std::min(tokens.size(), own_steps));
  logprobs.resize(tokens.size());
  GenerationOutput out;
  out.tokens = tokens.empty() ? at::zeros({b, 0}, prompt_ids.options().dtype(at::kLong)) : at::stack(tokens, 1);
  out.logprobs = logprobs.empty() ? at::zeros({b, 0}, prompt_ids.options().dtype(at::kFloat)) : at::stack(logprobs, 1);
  out.lengths = lengths;
  out.replayed_graph = steps.replaying();
  out.graph_error = steps.graph_error();
  return out;
}

}  // namespace aln::model
