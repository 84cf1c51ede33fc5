#include "core/fingerprint.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace aln {
namespace {

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// The finaliser of splitmix64: every input bit affects every output bit.
uint64_t avalanche(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

void Fingerprint::mix(uint64_t word) {
  a_ = rotl(a_ ^ (word * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full + count_;
  b_ = rotl(b_ + (word ^ 0x52dce729ull) * 0xff51afd7ed558ccdull, 27) ^ a_;
  ++count_;
}

Fingerprint& Fingerprint::add(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);  // little-endian hosts only, which is all we build for
    mix(word);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, size - i);
  mix(tail ^ (static_cast<uint64_t>(size - i) << 56));
  return *this;
}

Fingerprint& Fingerprint::add(std::string_view text) {
  mix(static_cast<uint64_t>(text.size()));
  return add(text.data(), text.size());
}

Fingerprint& Fingerprint::add(int64_t value) {
  mix(static_cast<uint64_t>(value));
  return *this;
}

std::string Fingerprint::hex() const {
  return absl::StrFormat("%016x%016x", avalanche(a_ ^ count_), avalanche(b_ + a_));
}

}  // namespace aln
