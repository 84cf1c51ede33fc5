#!/usr/bin/env bash
# Every GPU check in one command, for the GPU machine (../shared/DEVICE.md: one H200, PyTorch 2.11's
# LibTorch, CUDA 13.0, no gRPC/abseil/prometheus-cpp, no network). Run there from a copy of the
# working tree, after scripts/device_prepare.sh ran here and with .device carried along:
#   device tool: command "bash scripts/device_check.sh", carry [".device"], timeout 560
# It builds `aln` and the kernel tests against the machine's LibTorch (16 cores), runs the kernel
# tests (values and gradients against the CPU), the NCCL communicator's collectives (nccl_gpu_test)
# and `compute-sanitizer` memcheck on the CUDA kernels,
# then tests/gpu/trainers_gpu_test.sh (every trainer on the GPU against its CPU run, 2 ranks on one
# GPU, a GPU checkpoint resumed on the CPU), then, with the time left, bench/gpu_dpo_step.py (Aln's
# DPO step against TRL and TRL + Liger) and bench/gpu_generate.py (Aln's generation, with and without
# CUDA graphs, against transformers `generate`), and prints one JSON summary line last. Budget: about 9
# minutes, so a 15-minute window holds a rerun; each part has its own time limit.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-/tmp/aln-device}"; mkdir -p "$out"
start=$(date +%s)
declare -A result
elapsed() { echo $(( $(date +%s) - start )); }
step() {  # step NAME LIMIT_S command...: runs it with a time limit, log in $out/NAME.log
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1; local rc=$?
  result[$name]="{\"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}"
  echo "[device_check] $name: rc $rc after $(( $(date +%s) - t0 )) s (log $out/$name.log)"; tail -3 "$out/$name.log"
  return $rc
}

PY="${PYTHON:-$(command -v python3)}"
[[ -x /opt/torch/.venv/bin/python3 ]] && PY=/opt/torch/.venv/bin/python3
torch_dir="$("$PY" -c 'import torch, os; print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))')"
prefix="$PWD/.device/prefix/usr"
[[ -d $prefix ]] || echo "[device_check] .device/prefix missing: run scripts/device_prepare.sh here and carry .device"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader >"$out/gpu.txt" 2>&1
echo "[device_check] $(cat "$out/gpu.txt"); LibTorch $torch_dir"

build=build-device
step configure 120 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$torch_dir" \
  -DCMAKE_PREFIX_PATH="$prefix" -DALN_BUILD_LAUNCHER=OFF -DALN_BUILD_BENCH=ON -DALN_BUILD_TESTS=ON \
  -DALN_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 &&
step build 300 cmake --build "$build" -j 16 --target aln kernels_test model_test model_bench
export LD_LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [[ -x $build/bin/aln ]]; then
  step version 30 "$build/bin/aln" version
  step kernels 120 "$build/bin/kernels_test"
  step model 120 "$build/bin/model_test"
  # The NCCL communicator's collectives at world size 1 (a target of CUDA builds with NCCL only, so
  # built on its own: a build without it fails this step, not the others).
  step nccl_build 120 cmake --build "$build" -j 16 --target nccl_gpu_test &&
    step nccl 60 "$build/bin/nccl_gpu_test"
  if command -v compute-sanitizer >/dev/null; then
    step memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$build/bin/kernels_test" --gtest_filter='*Cuda*'
  fi
  step trainers_gpu 300 bash tests/gpu/trainers_gpu_test.sh "$PWD/$build/bin/aln" mpirun
  # The DPO step against TRL (+ Liger) side by side, with the time that is left (DEVICE.md's shape:
  # 0.5B parameters, 8 pairs of 512 + 512 tokens, bf16). The peers' wheels come in .device/whl.
  peers=none
  if ls .device/whl/*.whl >/dev/null 2>&1 &&
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/aln-peers \
      .device/whl/*.whl >"$out/peers_install.log" 2>&1; then
    peers=trl,trl_liger
    export PYTHONPATH="/tmp/aln-peers${PYTHONPATH:+:$PYTHONPATH}"
  fi
  left=$(( 540 - $(elapsed) ))
  if (( left >= 150 )); then
    step gpu_dpo $(( left < 300 ? left : 300 )) "$PY" bench/gpu_dpo_step.py --aln "$build/bin/aln" --peers "$peers" \
      --out "$out/gpu_dpo_step.json"
  else
    echo "[device_check] gpu_dpo: skipped, ${left} s left of the 540 s budget"
  fi
  # Generation against transformers `generate` (DEVICE.md's shape: batch 64, 256-token prompts, 128 new
  # tokens, bf16), Aln with and without its CUDA graphs.
  left=$(( 540 - $(elapsed) ))
  if (( left >= 90 )); then
    step gpu_generate $(( left < 180 ? left : 180 )) "$PY" bench/gpu_generate.py --model-bench "$build/bin/model_bench" \
      --out "$out/gpu_generate.json"
  else
    echo "[device_check] gpu_generate: skipped, ${left} s left of the 540 s budget"
  fi
fi
json="{\"seconds\": $(elapsed), \"gpu\": \"$(tr -d '"\n' <"$out/gpu.txt")\""
for k in "${!result[@]}"; do json+=", \"$k\": ${result[$k]}"; done
# (grep -c prints 0 and exits 1 when nothing matches: the count alone, n/a only without a log.)
failures=$(grep -c '^FAIL' "$out/trainers_gpu.log" 2>/dev/null)
json+=", \"trainers_gpu_failures\": \"${failures:-n/a}\""
# The benchmark's headline: each framework's tokens/s and peak GPU memory, Aln's ratios over the peers.
if [[ -f $out/gpu_dpo_step.json ]]; then
  json+=", \"gpu_dpo\": $("$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
h = {k: {m: v.get(m) for m in ("tokens_per_s", "peak_process_MiB", "peak_allocated_GiB", "error")} for k, v in r["frameworks"].items()}
h.update({k: v for k, v in r.items() if k.startswith("aln_over_")})
print(json.dumps(h))' "$out/gpu_dpo_step.json" 2>/dev/null || echo null)"
fi
if [[ -f $out/gpu_generate.json ]]; then
  json+=", \"gpu_generate\": $("$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({k: v for k, v in r.items() if k in ("transformers", "aln", "aln_dynamic_steps") or k.endswith("_over_transformers")}))' "$out/gpu_generate.json" 2>/dev/null || echo null)"
fi
json+="}"
echo "$json" | tee "$out/summary.json"
