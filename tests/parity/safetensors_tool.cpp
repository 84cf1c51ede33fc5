// Test helper for tests/parity/safetensors_parity.py, the C++ side of our safetensors I/O:
//   dump FILE                 tensors of FILE as JSON: name -> {dtype, shape, sha256 of the raw bytes}
//   dump-checkpoint DIR       the same for DIR/model.safetensors or a sharded DIR/model.safetensors.index.json
//   roundtrip IN OUT          load IN, save its tensors and metadata to OUT
//   reshard DIR OUT_DIR MAX   load the checkpoint in DIR, save it sharded into OUT_DIR with MAX bytes per shard
//   check FILE                {"ok": bool, "error": message}
//   batch                     one command per stdin line (arguments separated by tabs), one JSON result per
//                             output line: {"ok": bool, "result": ..., "error": message}. The parity test uses it
//                             so LibTorch loads once instead of once per command.
// Single commands print their result (JSON or nothing); errors print the absl::Status and exit 1.
#include <array>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "core/io/sharded_checkpoint.h"

namespace {

// FIPS 180-4 SHA-256; small and dependency-free so the tool needs no crypto library.
class Sha256 {
 public:
  void update(const unsigned char* data, size_t size) {
    for (size_t i = 0; i < size; ++i) {
      block_[fill_++] = data[i];
      if (fill_ == 64) {
        compress();
        fill_ = 0;
      }
    }
    length_ += size;
  }
  std::string hex() {
    const uint64_t bits = length_ * 8;
    const unsigned char pad = 0x80;
    update(&pad, 1);
    const unsigned char zero = 0;
    while (fill_ != 56) update(&zero, 1);
    for (int i = 7; i >= 0; --i) {
      const unsigned char b = static_cast<unsigned char>(bits >> (8 * i));
      update(&b, 1);
    }
    std::string out;
    char buf[9];
    for (uint32_t v : h_) {
      std::snprintf(buf, sizeof(buf), "%08x", v);
      out += buf;
    }
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static constexpr std::array<uint32_t, 64> k = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::array<uint32_t, 64> w{};
    for (size_t i = 0; i < 16; ++i) {
      w[i] = uint32_t{block_[4 * i]} << 24 | uint32_t{block_[4 * i + 1]} << 16 | uint32_t{block_[4 * i + 2]} << 8 |
             uint32_t{block_[4 * i + 3]};
    }
    for (size_t i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::array<uint32_t, 8> v = h_;
    for (size_t i = 0; i < 64; ++i) {
      const uint32_t s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
      const uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
      const uint32_t t1 = v[7] + s1 + ch + k[i] + w[i];
      const uint32_t s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
      const uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
      const uint32_t t2 = s0 + maj;
      v = {t1 + t2, v[0], v[1], v[2], v[3] + t1, v[4], v[5], v[6]};
    }
    for (size_t i = 0; i < 8; ++i) h_[i] += v[i];
  }

  std::array<uint32_t, 8> h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, 64> block_{};
  size_t fill_ = 0;
  uint64_t length_ = 0;
};

nlohmann::json describe(const aln::io::SafetensorsFile& file) {
  nlohmann::json tensors = nlohmann::json::object();
  for (const auto& [name, t] : file.tensors) {
    Sha256 sha;
    sha.update(static_cast<const unsigned char*>(t.data_ptr()), t.nbytes());
    tensors[name] = {{"dtype", std::string(*aln::io::safetensors_dtype_name(t.scalar_type()))},
                     {"shape", t.sizes().vec()},
                     {"sha256", sha.hex()}};
  }
  return {{"metadata", file.metadata}, {"tensors", tensors}};
}

aln::io::NamedTensors as_list(const aln::io::SafetensorsFile& file) {
  return {file.tensors.begin(), file.tensors.end()};
}

// Runs one command; the result is JSON (null for commands that only write files).
absl::StatusOr<nlohmann::json> run(const std::vector<std::string>& args) {
  const std::string cmd = args.empty() ? "" : args[0];
  if ((cmd == "dump" || cmd == "dump-checkpoint" || cmd == "check") && args.size() == 2) {
    auto file =
        cmd == "dump-checkpoint" ? aln::io::load_safetensors_checkpoint(args[1]) : aln::io::load_safetensors(args[1]);
    if (cmd == "check") {
      return nlohmann::json{{"ok", file.ok()}, {"error", file.ok() ? "" : std::string(file.status().message())}};
    }
    if (!file.ok()) return file.status();
    return describe(*file);
  }
  if (cmd == "roundtrip" && args.size() == 3) {
    auto file = aln::io::load_safetensors(args[1]);
    if (!file.ok()) return file.status();
    absl::Status s = aln::io::save_safetensors(args[2], as_list(*file), file->metadata);
    if (!s.ok()) return s;
    return nlohmann::json();
  }
  if (cmd == "reshard" && args.size() == 4) {
    auto file = aln::io::load_safetensors_checkpoint(args[1]);
    if (!file.ok()) return file.status();
    absl::Status s = aln::io::save_sharded_safetensors(args[2], as_list(*file), std::stoull(args[3]));
    if (!s.ok()) return s;
    return nlohmann::json();
  }
  return absl::InvalidArgumentError(
      "usage: dump FILE | dump-checkpoint DIR | roundtrip IN OUT | reshard DIR OUT_DIR MAX | check FILE | batch");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "batch") {
    std::string line;
    while (std::getline(std::cin, line)) {
      auto result = run(absl::StrSplit(line, '\t'));
      nlohmann::json out = {{"ok", result.ok()},
                            {"result", result.ok() ? *result : nlohmann::json()},
                            {"error", result.ok() ? "" : result.status().ToString()}};
      std::printf("%s\n", out.dump().c_str());
    }
    return 0;
  }
  auto result = run(args);
  if (!result.ok()) {
    std::fprintf(stderr, "%s\n", result.status().ToString().c_str());
    return 1;
  }
  if (!result->is_null()) std::printf("%s\n", result->dump().c_str());
  return 0;
}
