#pragma once
// The shared Buffer: tokenised examples every trainer consumes, with a seeded, deterministic order
// per epoch, sharding across data-parallel ranks, and a position that checkpoints save so a resumed
// job continues with exactly the examples it would have seen.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace aln::buffer {

// One tokenised training example. SFT uses prompt + response; preference methods use prompt +
// chosen + rejected. Labels are optional per source.
struct Example {
  std::vector<int64_t> prompt;
  std::vector<int64_t> response;  // SFT
  std::vector<int64_t> chosen;    // pairs
  std::vector<int64_t> rejected;
  int unsafe_chosen = -1;  // 1 unsafe, 0 safe, -1 unknown
  int unsafe_rejected = -1;
  int safer = -1;  // which response the safety preference picks: 0 chosen, 1 rejected
  double reference_chosen = std::numeric_limits<double>::quiet_NaN();  // cached reference log-probs
  double reference_rejected = std::numeric_limits<double>::quiet_NaN();
  std::string category;     // prompts: harm category or dataset type when the data has one
  std::string prompt_text;  // the prompt as written in the data, before the chat format (plain-text prompts)
  std::vector<float> rejected_weights;      // per-token weights on `rejected` (PT-ALIGN's unlikelihood); empty = none
  std::vector<std::string> rejected_spans;  // annotated harmful parts of `rejected` (text), when the data has them
  std::string source;                       // "file:line" for messages
};

struct Position {
  int64_t epoch = 0;
  int64_t offset = 0;  // examples of the epoch consumed by all ranks together
};

class Buffer {
 public:
  // The epoch's permutation is one stream of examples; each call of next(n) on every rank takes the
  // next world * n of it, rank r the r-th block of n. So the ranks' batches of one step are exactly
  // the micro-batches one process would form with `world`-fold gradient accumulation, and the
  // position (global, not per rank) means the same whatever the number of ranks. An epoch is the
  // largest multiple of `world` examples (the remainder is dropped, so ranks stay in lock-step).
  Buffer(std::vector<Example> examples, uint64_t seed, int rank = 0, int world = 1);

  // The next `n` examples of this rank, wrapping into the next epoch (reshuffled) when needed.
  std::vector<const Example*> next(int64_t n);

  Position position() const { return position_; }
  void seek(Position p) { position_ = p; }
  int64_t size() const { return static_cast<int64_t>(examples_.size()); }
  int64_t shard_size() const;  // examples per rank per epoch
  std::vector<Example>& examples() { return examples_; }
  const std::vector<Example>& examples() const { return examples_; }

  // The permutation of example indices for `epoch` (Fisher-Yates over a std::mt19937_64 seeded with
  // seed and epoch, which the C++ standard fully specifies, so orders are identical everywhere).
  std::vector<int64_t> order(int64_t epoch) const;

  // Length-aware batching: within windows of `window` consecutive examples of each epoch's order,
  // examples are sorted by `lengths` (one per example), so micro-batches need little padding.
  void group_by_length(std::vector<int64_t> lengths, int64_t window);

 private:
  std::vector<Example> examples_;
  uint64_t seed_;
  int rank_;
  int world_;
  Position position_;
  std::vector<int64_t> lengths_;
  int64_t window_ = 0;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_order_;
};

// Right-padded batch of prompt+response sequences. response_mask marks response tokens.
struct SequenceBatch {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor attention_mask;  // [B, T] int64
  at::Tensor response_mask;   // [B, T] float32
  // Positions p (flat, into [B * (T - 1)]) whose next token is a response token: the ones a
  // response's log-probs are read at. Found on the host as the batch is laid out, so scoring on a
  // device needs no nonzero() (a host sync). Undefined: the scorer finds them itself.
  at::Tensor scored;
  bool right_padded = false;  // every row's padding is on the right (the collate functions say so)
  int64_t tokens = 0;         // real (unpadded) tokens, counted on the host (throughput)

  // The same batch on `device` (the tensors copied, or shared where they are there already).
  SequenceBatch to(const at::Device& device) const;
};

SequenceBatch collate(const std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>>& rows,
                      int64_t pad_id);
// SFT rows: prompt + response.
SequenceBatch collate_sft(const std::vector<const Example*>& examples, int64_t pad_id);
// Pairs: rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected (same padded length).
SequenceBatch collate_pairs(const std::vector<const Example*>& examples, int64_t pad_id);

// Truncation to the configured lengths: keep the end of the prompt, cap the response.
// `keep_prompt_start` keeps the beginning of an over-long prompt instead of its end.
void truncate(std::vector<int64_t>* prompt, int64_t max_prompt, std::vector<int64_t>* response, int64_t max_response,
              bool keep_prompt_start = false);

}  // namespace aln::buffer
