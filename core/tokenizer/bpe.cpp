#include "core/tokenizer/bpe.h"

#include <algorithm>
#include <queue>

#include "core/tokenizer/utf8.h"

namespace aln::tokenizer {

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, std::optional<int32_t> unk_id,
                   IgnoreMerges ignore_merges)
    : vocab_(std::move(vocab)), unk_id_(unk_id), ignore_merges_(ignore_merges) {
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab_) max_id = std::max(max_id, id);
  id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  has_id_.assign(id_to_token_.size(), false);
  for (const auto& [token, id] : vocab_) {
    id_to_token_[id] = token;
    has_id_[id] = true;
  }
  merges_.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const uint64_t k = key(vocab_.at(a), vocab_.at(b));
    // A duplicated merge keeps its first (best) rank.
    merges_.try_emplace(k, Merge{static_cast<int32_t>(rank), vocab_.at(a + b)});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id > max_id() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_ == IgnoreMerges::kYes) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  {
    const std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(std::string(word));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  const std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(ids));
}

std::vector<int32_t> BpeModel::merge_word(std::string_view word) const {
  // Symbols form a linked list; merged-away symbols get id -1.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> symbols;
  for (std::size_t pos = 0; pos < word.size();) {
    const Utf8Unit u = decode_utf8(word, pos);
    const auto id = token_to_id(word.substr(pos, u.length));
    pos += u.length;
    // A character outside the vocabulary becomes the unknown token, or is dropped when the model
    // has none (as `tokenizers` does; byte-level vocabularies contain all 256 byte characters).
    const std::optional<int32_t> sym = id ? id : unk_id_;
    if (!sym) continue;
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({*sym, index - 1, index + 1});
  }
  if (symbols.empty()) return {};
  symbols.back().next = -1;

  // Candidate merges ordered by rank, then by position (leftmost first); entries can go stale when
  // a neighbour was merged first, so each is re-checked when popped.
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push_pair = [&](int32_t pos) {
    if (pos < 0 || symbols[pos].next < 0) return;
    const auto it = merges_.find(key(symbols[pos].id, symbols[symbols[pos].next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    const auto it = merges_.find(key(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    left.next = right.next;
    right.id = -1;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    push_pair(left.prev);
    push_pair(top.pos);
  }
  std::vector<int32_t> ids;
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
  return ids;
}

}  // namespace aln::tokenizer
