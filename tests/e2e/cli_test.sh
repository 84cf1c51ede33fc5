#!/usr/bin/env bash
# `aln` as a user meets it: help, version, the built-in default, and every kind of config error
# giving exit code 2 and one line with file:line and key path. Run from the repo root.
set -uo pipefail
ALN="$1"; LAUNCHER="$2"; ALNCTL="$3"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
failures=0; passed=0
pass() { passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect NAME WANT_CODE WANT_STDERR_LINE -- command...
expect() {
  local name="$1" code="$2" want="$3"; shift 4
  local out err rc
  "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
  err="$(cat "$tmp/err")"
  if [[ $rc -ne $code ]]; then fail "$name: exit $rc, want $code; stderr: $err"; return; fi
  if [[ -n "$want" && "$err" != "$want" ]]; then fail "$name: stderr '$err', want '$want'"; return; fi
  pass
}

"$ALN" --help >"$tmp/help" || fail "--help exit $?"
grep -q "usage: aln <command>" "$tmp/help" && grep -q "  train " "$tmp/help" && pass || fail "help text"
"$ALN" version >"$tmp/version" || fail "version exit $?"
for part in "aln 0." "LibTorch  2." "MPI       Open MPI" "gRPC      1." "CUDA" "NCCL"; do
  grep -q "$part" "$tmp/version" && pass || fail "version lacks '$part': $(cat "$tmp/version")"
done
expect "no command" 2 "" -- "$ALN"
expect "unknown command" 2 "aln: unknown command 'trian'; see \`aln --help\`" -- "$ALN" trian
expect "unknown option" 2 "aln train: unknown option '--bogus'; see \`aln train --help\`" -- "$ALN" train --bogus

# The built-in default is examples/quickstart.yaml and is valid.
"$ALN" train --dry-run >"$tmp/plan" 2>&1 && pass || fail "default dry run: $(cat "$tmp/plan")"
grep -q "job quickstart (<built-in quickstart>)" "$tmp/plan" && pass || fail "plan: $(cat "$tmp/plan")"
grep -q "stage 2 safedpo" "$tmp/plan" && pass || fail "plan stages: $(cat "$tmp/plan")"
"$ALN" train examples/quickstart.yaml --dry-run >/dev/null 2>&1 && pass || fail "examples/quickstart.yaml dry run"

# Config errors: exit 2, one line, file:line: key.path: what.
printf 'name: t\ndata:\n  train:\n    - path: a.jsonl\n\n\ntrainer:\n  dpo:\n    bogus: 1\n' >"$tmp/unknown.yaml"
expect "unknown key" 2 "$tmp/unknown.yaml:9: trainer.dpo.bogus: unknown field (DpoOptions has: beta, loss_type, label_smoothing)" -- "$ALN" train "$tmp/unknown.yaml"
printf 'name: t\nseed: [1]\n' >"$tmp/type.yaml"
expect "wrong type" 2 "$tmp/type.yaml:2: seed: wrong type: expected an integer, got a list" -- "$ALN" train "$tmp/type.yaml"
printf 'trainer:\n  safedpo:\n    beta: 0.1\n    delta: -2\n' >"$tmp/range.yaml"
expect "out of range" 2 "$tmp/range.yaml:4: trainer.safedpo.delta: out of range: -2 < minimum 0" -- "$ALN" train "$tmp/range.yaml"
printf 'trainer:\n  dpo: [beta: 1\n' >"$tmp/syntax.yaml"
"$ALN" train "$tmp/syntax.yaml" >/dev/null 2>"$tmp/err"; rc=$?
[[ $rc -eq 2 && "$(cat "$tmp/err")" == "$tmp/syntax.yaml:"*": (yaml): syntax error: "* && $(wc -l <"$tmp/err") -eq 1 ]] && pass || fail "bad yaml: rc $rc: $(cat "$tmp/err")"
expect "missing file" 2 "$tmp/none.yaml:0: (file): cannot open the job file; check the path" -- "$ALN" train "$tmp/none.yaml"

# Every command has its own --help (convert used to print the global help and answer "not available").
for sub in eval generate data convert; do
  "$ALN" "$sub" --help >"$tmp/out" 2>&1; rc=$?
  [[ $rc -eq 0 ]] && grep -q "^usage: aln $sub" "$tmp/out" && pass || fail "$sub --help: rc $rc: $(head -1 "$tmp/out")"
done
# runtime.device: cuda. Without a GPU: exit 1 and one line saying so and what to do (LibTorch's CUDA
# library is loaded on demand, so this also checks it loads beside Aln's own NCCL and CUDA runtime).
# Combinations that do not run on GPUs yet: exit 2 naming the key.
sed "s#^output_dir: .*#output_dir: $tmp/cuda#; s/^runtime:/runtime:\n  device: cuda/; s/^  port: 9400/  enabled: false/" \
  examples/quickstart.yaml >"$tmp/cuda.yaml"
if ! "$ALN" version | grep -q "device(s))"; then
  "$ALN" train "$tmp/cuda.yaml" >/dev/null 2>"$tmp/err"; rc=$?
  [[ $rc -eq 1 && $(wc -l <"$tmp/err") -eq 1 ]] && grep -q "^aln train: runtime.device: cuda, but LibTorch sees no CUDA device here .*set runtime.device: cpu" "$tmp/err" \
    && pass || fail "cuda without a GPU: rc $rc: $(cat "$tmp/err")"
fi
printf 'parallel: {policy: {shard: full}}\n' >>"$tmp/cuda.yaml"
expect "cuda with full sharding" 2 "aln train: runtime.device: cuda with parallel.policy.shard: full is not supported yet (on a GPU: one process or data-parallel ranks); remove it or set runtime.device: cpu" -- "$ALN" train "$tmp/cuda.yaml"
# parallel.backend: nccl moves GPU tensors: on the CPU, exit 2 naming the key and what to set.
sed "s#^output_dir: .*#output_dir: $tmp/nccl#; s/^  port: 9400/  enabled: false/" examples/quickstart.yaml >"$tmp/nccl.yaml"
printf 'parallel: {backend: nccl}\n' >>"$tmp/nccl.yaml"
expect "nccl on the cpu" 2 "aln train: parallel.backend: nccl moves CUDA tensors, but runtime.device is cpu; set runtime.device: cuda, or parallel.backend: auto to train on the CPU over MPI" -- "$ALN" train "$tmp/nccl.yaml"

# The data-parallel examples are valid jobs (they run under mpirun; without it they say how to start them).
for n in 2 4; do
  "$ALN" train examples/quickstart_dp$n.yaml --dry-run >"$tmp/out" 2>&1 && grep -q "parallel: policy dp $n x pp 1" "$tmp/out" && pass || fail "quickstart_dp$n.yaml dry run: $(tail -2 "$tmp/out")"
  "$ALN" train examples/quickstart_dp$n.yaml >/dev/null 2>"$tmp/err"; rc=$?
  [[ $rc -eq 2 ]] && grep -q "mpirun -np $n aln train examples/quickstart_dp$n.yaml" "$tmp/err" && pass || fail "dp$n without mpirun: rc $rc $(cat "$tmp/err")"
done
printf 'name: t\nmodel: {tokenizer: examples/data/tokenizers/gpt2/tokenizer.json}\ntrainer: {sft: {}}\ndata:\n  packing: true\n  train: [{path: x.jsonl}]\nmetrics: {enabled: false}\n' >"$tmp/packing.yaml"
"$ALN" train "$tmp/packing.yaml" >/dev/null 2>"$tmp/err"; rc=$?
[[ $rc -eq 2 ]] && grep -q "data.packing: not supported yet" "$tmp/err" && pass || fail "packing refused: rc $rc $(cat "$tmp/err")"
"$ALN" eval --model "$tmp/nomodel" >/dev/null 2>"$tmp/err"; rc=$?
[[ $rc -eq 2 ]] && grep -q "config.json: cannot open" "$tmp/err" && pass || fail "eval missing model: rc $rc $(cat "$tmp/err")"
"$ALN" eval --stage nope >/dev/null 2>"$tmp/err"; rc=$?
[[ $rc -eq 2 ]] && grep -q "no stage named 'nope'" "$tmp/err" && pass || fail "eval bad stage: rc $rc $(cat "$tmp/err")"
"$ALN" generate --prompt hi >/dev/null 2>"$tmp/err"; rc=$?
[[ $rc -eq 2 ]] && grep -q "aln generate: --model is required" "$tmp/err" && pass || fail "generate usage: rc $rc"
"$ALN" generate --model "$tmp/nomodel" --tokenizer examples/data/tokenizers/gpt2/tokenizer.json --prompt hi >/dev/null 2>"$tmp/err"; rc=$?
[[ $rc -eq 2 ]] && grep -q "config.json: cannot open" "$tmp/err" && pass || fail "generate missing model: rc $rc $(cat "$tmp/err")"

# aln data: counts and problems with file:line; validate exits 1 when a row is bad.
"$ALN" data inspect examples/data/xstest/xstest_pairs_shared.jsonl >"$tmp/inspect" 2>&1 && pass || fail "data inspect"
grep -q "476 rows, 476 records, 0 problems" "$tmp/inspect" && pass || fail "inspect counts: $(head -3 "$tmp/inspect")"
printf '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "same", "rejected": "same"}\n' >"$tmp/bad.jsonl"
"$ALN" data validate "$tmp/bad.jsonl" >"$tmp/out" 2>"$tmp/err"; rc=$?
[[ $rc -eq 1 ]] && grep -q "bad.jsonl:2: rejected: identical to chosen" "$tmp/err" && pass || fail "data validate: rc $rc $(cat "$tmp/err")"
"$LAUNCHER" --help >/dev/null && pass || fail "aln-launcher --help"
"$ALNCTL" --help >/dev/null && pass || fail "alnctl --help"

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
