#pragma once
// The BPE model: vocabulary, ranked merges, and the merge loop for one pre-tokenized word.
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace aln::tokenizer {

enum class IgnoreMerges { kNo, kYes };

class BpeModel {
 public:
  // `merges` are pairs of vocabulary tokens; their position is their rank. The loader has already
  // checked that both sides and their concatenation are in `vocab`.
  BpeModel(std::unordered_map<std::string, int32_t> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, std::optional<int32_t> unk_id,
           IgnoreMerges ignore_merges);

  // Appends the ids of one word (already byte-level mapped).
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr when unknown
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  std::vector<int32_t> merge_word(std::string_view word) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  IgnoreMerges ignore_merges_;

  // Words repeat a lot in natural text; the cache is bounded and guarded because encode is const
  // and may run on several threads.
  static constexpr std::size_t kCacheCapacity = 10000;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace aln::tokenizer
