#pragma once
// Batched generation with a KV cache: greedy or sampled (temperature, top-k, top-p), stop tokens and
// caller-defined stop conditions (stop strings need a tokenizer, so the caller supplies the check),
// seeded and reproducible. Used by `aln generate`, rollouts (GRPO, HAIR) and self-generated data.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/model/decoder.h"

namespace aln::model {

enum class Decoding { kGreedy, kSample };

struct GenerationOptions {
  Decoding decoding = Decoding::kGreedy;
  int64_t max_new_tokens = 32;
  double temperature = 1.0;  // kSample only
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
  std::vector<int64_t> stop_tokens;  // the stop token is kept in the output, then the row ends
  int64_t pad_token_id = 0;          // written after a row ended
  // Called after each new token with the row index and its generated ids so far; true ends the row
  // (for stop strings: decode and search).
  std::function<bool(int64_t row, const std::vector<int64_t>& generated)> stop_condition;
  // Calls that must take equally many decoding steps (a fully sharded model, whose every pass is a
  // collective across the ranks that each generate for their own prompts): called at each check
  // (below) but after the last token with whether this call's rows have all ended; returns whether
  // every rank's have. Until then decoding goes on (pad tokens for ended rows), and the output is
  // cut back to this call's own steps: what generating alone returns, bit for bit. Unset: a call
  // ends with its own rows.
  std::function<bool(bool ended_here)> all_ended;
  // Decoding steps between checks of whether every row has ended, the one host read of a step
  // (0: every step on the CPU, where the read is free, every 8 on a GPU, where each read stalls the
  // host until the device catches up and so stops it queueing the next steps). Stop tokens are
  // matched on the device every step, so the output is the same for any value: a call may only
  // take a few more steps, for rows that have all ended, whose columns are cut off. A
  // stop_condition (host code over each row's tokens) checks every step.
  int64_t check_every = 0;
  // The shape of the decoding steps after the prompt's pass. kDynamic: each step attends over the
  // positions written so far (the cache grows by one each step). kStatic: every step has one shape
  // (KvCache::StaticStep: the whole capacity behind a mask, positions and write index on the device)
  // - the same tokens, and log-probs within rounding. kAuto: on a GPU, static steps captured once into
  // a CUDA graph and replayed (core/model/cuda_graph.h), where graphs are available and the model's
  // passes have no collectives (not fully sharded); dynamic elsewhere (the CPU gains nothing from the
  // fixed shape, and would attend over the whole capacity).
  enum class Steps { kAuto, kDynamic, kStatic };
  Steps steps = Steps::kAuto;
};

struct GenerationOutput {
  at::Tensor tokens;    // [B, N] int64, pad after a row's end
  at::Tensor logprobs;  // [B, N] float32: log-prob of each token under the temperature-scaled distribution
  at::Tensor lengths;   // [B] int64 generated tokens per row (stop token included)
  bool replayed_graph = false;  // the decoding steps were replayed from a CUDA graph (GenerationOptions::steps)
  std::string graph_error;      // why not, when a graph was wanted and its capture failed
};

// prompt_ids / prompt_mask: [B, T], left-padded (mask 0 on the left).
GenerationOutput generate(const DecoderModel& model, const at::Tensor& prompt_ids, const at::Tensor& prompt_mask,
                          const GenerationOptions& options);

// Keeps the top-k logits and the smallest set whose probability reaches top_p; others become -inf.
at::Tensor filter_logits(const at::Tensor& logits, int64_t top_k, double top_p);

}  // namespace aln::model
