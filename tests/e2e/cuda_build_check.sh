#!/usr/bin/env bash
# The CUDA path is really in the build: the kernel library's CUDA object carries a fat binary with
# device code compiled for sm_80 and sm_90 (ptxas records its target in each cubin), the kernel's
# host stub is there, and `aln` links NCCL and the CUDA runtime.
set -euo pipefail
LIB="$1"; ALN="$2"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
(cd "$work" && ar x "$LIB")
obj="$work/token_logprobs.cu.o"
[[ -f "$obj" ]] || { echo "FAIL: no token_logprobs.cu.o in $LIB"; exit 1; }
objdump -h "$obj" | grep -q "\.nv_fatbin" || { echo "FAIL: $obj has no .nv_fatbin section"; exit 1; }
strings -a "$obj" >"$work/strings"
for arch in sm_80 sm_90; do
  grep -q -- "-arch $arch" "$work/strings" || { echo "FAIL: no $arch device code in $obj"; exit 1; }
done
nm -C "$obj" >"$work/symbols"
grep -q "token_logprobs_kernel" "$work/symbols" || { echo "FAIL: token_logprobs_kernel stub missing"; exit 1; }
for lib in libnccl.so libcudart.so; do
  ldd "$ALN" >"$work/ldd"
  grep -q "$lib" "$work/ldd" || { echo "FAIL: aln does not link $lib"; exit 1; }
done
echo "CUDA objects for sm_80 and sm_90 present; NCCL and cudart linked into aln"
echo "5 passed, 0 failed"
