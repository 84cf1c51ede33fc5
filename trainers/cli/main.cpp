// `aln`: the one command-line entry point of Aln. Exceptions become a one-line message and exit
// code 1 here (one of the two places exceptions turn into errors); bad input exits 2.
#include <malloc.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "trainers/cli/commands.h"

namespace {

constexpr const char* kHelp =
    "aln — align language models with human preferences, safety first\n"
    "\n"
    "usage: aln <command> [options]\n"
    "\n"
    "commands:\n"
    "  train [JOB.yaml] [--dry-run] [--print-spec] [--resume]\n"
    "                 run a training job; without JOB.yaml the built-in quickstart\n"
    "                 (examples/quickstart.yaml). --dry-run validates and prints the plan.\n"
    "  eval [JOB.yaml] [--model DIR] [--reference DIR] [--stage NAME] [--json] [--out FILE]\n"
    "                 evaluate a model on a stage's held-out preference / safety data\n"
    "  generate --model DIR (--prompt TEXT | --prompts FILE) [...]\n"
    "                 sample from a Hugging Face model directory (batched, KV cache)\n"
    "  data           inspect or validate a data file (aln data inspect|validate FILE)\n"
    "  convert (--checkpoint DIR | --model DIR) --out DIR [--dtype float32|bfloat16|float16]\n"
    "                 a training checkpoint's policy (or a Hugging Face directory) as a Hugging Face\n"
    "                 directory in another dtype or sharding\n"
    "  version        versions of Aln and of LibTorch, MPI, gRPC, CUDA and NCCL\n"
    "\n"
    "exit codes: 0 success, 1 failure while running, 2 bad usage or bad input (the message names\n"
    "the file, line and key). Environment variables (ALN_*) are listed in docs/environment.md.\n";

int dispatch(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kHelp, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  aln::cli::Args args(argv + 2, argv + argc);
  for (const auto& a : args) {
    if ((a == "--help" || a == "-h") && command != "data" && command != "generate" && command != "eval" &&
        command != "convert") {
      std::fputs(kHelp, stdout);
      return 0;
    }
  }
  if (command == "train") return aln::cli::run_train(args);
  if (command == "version" || command == "--version") return aln::cli::run_version(args);
  if (command == "eval") return aln::cli::run_eval(args);
  if (command == "generate") return aln::cli::run_generate(args);
  if (command == "data") return aln::cli::run_data(args);
  if (command == "convert") return aln::cli::run_convert(args);
  std::fprintf(stderr, "aln: unknown command '%s'; see `aln --help`\n", command.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Training allocates and frees the same large tensors (logits over the vocabulary) every step.
  // glibc would hand each one back to the kernel and fault it in again; keeping them in the heap
  // removed most of the system time in the quickstart.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  try {
    return dispatch(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "aln: error: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "aln: error: unknown exception\n");
    return 1;
  }
}
