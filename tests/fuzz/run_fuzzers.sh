#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for ALN_FUZZ_SECONDS
# (default 60) from a seed corpus of real files, with a fixed libFuzzer seed (ALN_FUZZ_SEED, default 1)
# so CI explores the same inputs each run. Fails on any crash or sanitizer report.
#   tests/fuzz/run_fuzzers.sh BUILD_DIR TORCH_DIR
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$1"; TORCH_DIR="$2"
SECONDS_EACH="${ALN_FUZZ_SECONDS:-60}"
if ! command -v clang++ >/dev/null 2>&1; then
  echo "clang++ not found; scripts/setup.sh installs it" >&2
  exit 1
fi
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
mkdir -p "$OUT"
if ! { cmake -S "$HERE" -B "$OUT" "${generator[@]}" -DCMAKE_CXX_COMPILER=clang++ -DTorch_DIR="$TORCH_DIR" \
         -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build "$OUT" --parallel 2; } >"$OUT/build.log" 2>&1; then
  echo "FAIL: building the fuzzers failed:"; tail -30 "$OUT/build.log"; exit 1
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tok" "$work/st"
cp "$ROOT/examples/data/tokenizers/gpt2/tokenizer.json" "$work/tok/gpt2.json"
printf '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}}' >"$work/tok/small.json"
python3 - "$work/st" <<'PY'
import json, struct, sys
d = sys.argv[1]
h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"format": "pt"}}).encode()
open(f"{d}/good.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + b"\0" * 8)
open(f"{d}/header.json", "wb").write(h)
PY
status=0
for target in fuzz_tokenizer_json:tok fuzz_safetensors_header:st; do
  name="${target%%:*}"; corpus="$work/${target##*:}"
  echo "== $name for ${SECONDS_EACH}s"
  # -rss_limit_mb keeps a runaway allocation from taking the machine; crashes are written to $work.
  if ! "$OUT/$name" "$corpus" -seed="${ALN_FUZZ_SEED:-1}" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=4096 \
       -artifact_prefix="$work/" -print_final_stats=1 2>"$work/$name.log"; then
    echo "FAIL: $name found a crash or sanitizer report:"; tail -40 "$work/$name.log"; status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$work/$name.log" || true
  fi
done
[[ $status -eq 0 ]] && echo "2 passed, 0 failed" || echo "0 passed, 2 failed"
exit $status
