#!/usr/bin/env bash
# Compile-only check that the core model library builds for aarch64 (GH200 nodes): every file of
# core/model/ through Debian's cross compiler, against the same LibTorch headers (they are the
# same on both architectures). x86 kernels must sit behind ALN_X86_KERNELS for this to pass.
# Usage: check_aarch64.sh <repo root> <build dir> <torch include dir>...
# Exit 77 (CTest: skipped) when the cross compiler is not installed (scripts/setup.sh installs it).
set -euo pipefail
root="$1"; build="$2"; shift 2
cxx="${ALN_AARCH64_CXX:-aarch64-linux-gnu-g++}"
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "SKIP: $cxx not found (apt-get install g++-aarch64-linux-gnu, or run scripts/setup.sh)"
  exit 77
fi
includes=()
for dir in "$@"; do includes+=(-isystem "$dir"); done
failed=0
for f in "$root"/core/model/*.cpp; do
  # Debian's own headers (absl, nlohmann) come after the cross compiler's libc and libstdc++.
  if "$cxx" -std=c++20 -fsyntax-only -fopenmp -Wall -Wextra -Werror -I"$root" -I"$build" "${includes[@]}" \
       -idirafter /usr/include "$f"; then
    echo "aarch64 ok: ${f#"$root"/}"
  else
    echo "aarch64 FAILED: ${f#"$root"/}"
    failed=1
  fi
done
exit "$failed"
