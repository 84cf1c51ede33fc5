// aln-launcher: the gRPC job service (proto/aln/v1/launcher.proto). The service, its SQLite store,
// process spawning and service discovery land with the launcher work; this entry point exists so
// the layer builds and links gRPC from the start.
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::puts("aln-launcher — gRPC job service for Aln (JobService in proto/aln/v1/launcher.proto)");
    return 0;
  }
  std::fputs("aln-launcher: not available in this build yet; it lands with the launcher and monitoring work.\n",
             stderr);
  return 2;
}
