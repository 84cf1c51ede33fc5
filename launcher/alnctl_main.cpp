// alnctl: command-line client of aln-launcher (submit, status, list, watch, logs, cancel).
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::puts("alnctl — client of aln-launcher: submit | status | list | watch | logs | cancel");
    return 0;
  }
  std::fputs("alnctl: not available in this build yet; it lands with the launcher and monitoring work.\n", stderr);
  return 2;
}
