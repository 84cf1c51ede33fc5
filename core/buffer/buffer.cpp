#include "core/buffer/buffer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <random>

#include "core/error.h"

namespace aln::buffer {

Buffer::Buffer(std::vector<Example> examples, uint64_t seed, int rank, int world)
    : examples_(std::move(examples)), seed_(seed), rank_(rank), world_(world) {
  ALN_CHECK(world >= 1 && rank >= 0 && rank < world, "bad shard ", rank, " of ", world);
  ALN_CHECK(static_cast<int64_t>(examples_.size()) >= world, "the buffer has ", examples_.size(),
            " examples, fewer than the ", world, " data-parallel ranks");
}

void Buffer::group_by_length(std::vector<int64_t> lengths, int64_t window) {
  ALN_CHECK(lengths.size() == examples_.size(), "one length per example");
  lengths_ = std::move(lengths);
  window_ = window;
  cached_epoch_ = -1;
}

std::vector<int64_t> Buffer::order(int64_t epoch) const {
  std::vector<int64_t> idx(examples_.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(seed_ * 1000003ULL + static_cast<uint64_t>(epoch));
  // Fisher-Yates with our own index draw: std::shuffle and the distributions are implementation-defined.
  for (size_t i = idx.size(); i > 1; --i) {
    const uint64_t j = rng() % i;
    std::swap(idx[i - 1], idx[j]);
  }
  // Length grouping: sort each window of the shuffled order by length (longest first, ties by
  // index), so consecutive micro-batches hold similar lengths while the windows stay random.
  if (window_ > 1) {
    for (size_t start = 0; start < idx.size(); start += static_cast<size_t>(window_)) {
      const auto end = idx.begin() + static_cast<int64_t>(std::min(idx.size(), start + static_cast<size_t>(window_)));
      std::sort(idx.begin() + static_cast<int64_t>(start), end,
                [&](int64_t a, int64_t b) { return lengths_[a] != lengths_[b] ? lengths_[a] > lengths_[b] : a < b; });
    }
  }
  return idx;
}

int64_t Buffer::shard_size() const {
  // Every rank gets the same count (the remainder of an epoch is dropped) so steps stay in lock-step.
  return static_cast<int64_t>(examples_.size()) / world_;
}

std::vector<const Example*> Buffer::next(int64_t n) {
  const int64_t epoch_length = shard_size() * world_;
  const int64_t base = position_.epoch * epoch_length + position_.offset;  // this call's first stream index
  std::vector<const Example*> out;
  out.reserve(n);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = base + rank_ * n + j;
    const int64_t epoch = k / epoch_length;
    if (cached_epoch_ != epoch) {
      cached_order_ = order(epoch);
      cached_epoch_ = epoch;
    }
    out.push_back(&examples_[cached_order_[k % epoch_length]]);
  }
  const int64_t end = base + world_ * n;
  position_ = {end / epoch_length, end % epoch_length};
  return out;
}

SequenceBatch collate(const std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>>& rows,
                      int64_t pad_id) {
  int64_t longest = 1;
  for (const auto& [p, r] : rows) longest = std::max<int64_t>(longest, p->size() + r->size());
  const int64_t b = static_cast<int64_t>(rows.size());
  SequenceBatch out;
  out.input_ids = at::full({b, longest}, pad_id, at::kLong);
  out.attention_mask = at::zeros({b, longest}, at::kLong);
  out.response_mask = at::zeros({b, longest}, at::kFloat);
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<int64_t, 2>();
  auto resp = out.response_mask.accessor<float, 2>();
  std::vector<int64_t> scored;  // position t - 1 predicts response token t (in row-major order)
  for (int64_t i = 0; i < b; ++i) {
    const auto& [p, r] = rows[i];
    int64_t t = 0;
    for (int64_t id : *p) {
      ids[i][t] = id;
      mask[i][t] = 1;
      ++t;
    }
    for (int64_t id : *r) {
      ids[i][t] = id;
      mask[i][t] = 1;
      resp[i][t] = 1;
      if (t > 0) scored.push_back(i * (longest - 1) + t - 1);
      ++t;
    }
    out.tokens += t;
  }
  out.scored = at::tensor(scored, at::kLong);
  out.right_padded = true;
  return out;
}

SequenceBatch SequenceBatch::to(const at::Device& device) const {
  SequenceBatch out = *this;
  for (at::Tensor* t : {&out.input_ids, &out.attention_mask, &out.response_mask, &out.scored}) {
    if (t->defined()) *t = t->to(device);
  }
  return out;
}

SequenceBatch collate_sft(const std::vector<const Example*>& examples, int64_t pad_id) {
  std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>> rows;
  for (const Example* e : examples) rows.push_back({&e->prompt, &e->response});
  return collate(rows, pad_id);
}

SequenceBatch collate_pairs(const std::vector<const Example*>& examples, int64_t pad_id) {
  std::vector<std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*>> rows;
  for (const Example* e : examples) rows.push_back({&e->prompt, &e->chosen});
  for (const Example* e : examples) rows.push_back({&e->prompt, &e->rejected});
  return collate(rows, pad_id);
}

void truncate(std::vector<int64_t>* prompt, int64_t max_prompt, std::vector<int64_t>* response, int64_t max_response,
              bool keep_prompt_start) {
  if (static_cast<int64_t>(prompt->size()) > max_prompt) {
    if (keep_prompt_start) {
      prompt->resize(static_cast<size_t>(max_prompt));
    } else {
      prompt->erase(prompt->begin(), prompt->end() - max_prompt);
    }
  }
  if (static_cast<int64_t>(response->size()) > max_response) response->resize(max_response);
}

}  // namespace aln::buffer
