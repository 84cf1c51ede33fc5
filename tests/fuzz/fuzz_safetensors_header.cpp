// libFuzzer target: arbitrary bytes as a safetensors header (and as a whole file). Parsing must
// return a Status and never read outside the buffer.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/io/safetensors.h"

namespace {
// The scratch file of this fuzzing process, removed when the process ends (libFuzzer exits through
// exit(), which runs static destructors), so repeated runs leave nothing in /tmp.
struct ScratchFile {
  std::string path = "/tmp/aln_fuzz_safetensors_" + std::to_string(::getpid());
  ~ScratchFile() { std::remove(path.c_str()); }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // As a header alone, with data sizes around the interesting boundaries.
  for (uint64_t data_size : {uint64_t{0}, uint64_t{8}, uint64_t{size}}) {
    (void)aln::io::parse_safetensors_header(text, data_size, "fuzz");
  }
  // As a whole file through the loader.
  static const ScratchFile scratch;
  const std::string& path = scratch.path;
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
    (void)aln::io::load_safetensors(path);
  }
  return 0;
}
