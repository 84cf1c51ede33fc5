#pragma once
// A 128-bit content fingerprint for cache keys (reference log-probs) and checkpoint manifests.
// Not cryptographic: it guards against using a stale cache by accident, not against an attacker.
// Two independent 64-bit lanes over 8-byte words keep it fast enough to hash a model's weights
// (about a gigabyte per second) on every run, and the result is the same on every platform.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace aln {

class Fingerprint {
 public:
  Fingerprint& add(const void* data, size_t size);
  Fingerprint& add(std::string_view text);  // length-prefixed, so ("ab","c") != ("a","bc")
  Fingerprint& add(int64_t value);
  // 32 lowercase hex digits.
  std::string hex() const;

 private:
  void mix(uint64_t word);
  uint64_t a_ = 0x9e3779b97f4a7c15ull;
  uint64_t b_ = 0xc2b2ae3d27d4eb4full;
  uint64_t count_ = 0;
};

}  // namespace aln
