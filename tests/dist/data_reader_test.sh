#!/usr/bin/env bash
# One reader for the data (parallel.data_reader: lead) under a real mpirun: world rank 0 reads and
# tokenizes the stage's files and sends the examples to the other ranks. The ranks run in different
# working directories (mpirun -wdir) and the job names its data file by a relative path that exists
# only where rank 0 runs, so a rank that opened it itself would fail:
#  - with every_rank, rank 1 fails naming the missing file (the setup really hides the data);
#  - DPO on 2 ranks with data_reader: lead ends bit for bit where every_rank in one directory does;
#  - SFT then DPO with the reference on a rank of its own (3 processes, ranks 1 and 2 without the
#    data): the reference rank gets the prepared examples from rank 0 too; the same as every_rank;
#  - data missing on rank 0 as well: every rank fails at once with rank 0's error (no waiting).
set -uo pipefail
ALN="$(realpath "$1")"; MPIEXEC="$2"; PY="$(realpath -s "$3" 2>/dev/null || echo "$3")"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$(pwd)"
source tests/e2e/train_lib.sh
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; pkill -9 -f "$work/" 2>/dev/null; [[ -z "${KEEP:-}" ]] && rm -rf "$work"' EXIT
pid=""

# A holds the data (rank 0 runs there); B does not.
mkdir -p "$work/A/data" "$work/B"
cp examples/data/xstest/xstest_pairs_shared.jsonl "$work/A/data/pairs.jsonl"
gzip -dc examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz | head -64 >"$work/A/data/hh.jsonl"

job() {  # job NAME READER PLACEMENT [TWO_STAGES]
  cat <<YAML
name: data-reader
output_dir: $work/$1
seed: 5
model:
  tokenizer: $repo/examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_position: 256}
stages:
YAML
  if [[ -n "${4:-}" ]]; then
    echo "  - {name: sft, trainer: {sft: {}}, data: {train: [{path: data/hh.jsonl, format: hh_rlhf}], max_prompt_length: 40, max_response_length: 24, bad_records: skip}, optimizer: {lr: 2e-3, max_steps: 4, micro_batch_size: 2}}"
  fi
  cat <<YAML
  - {name: dpo, trainer: {dpo: {}}, data: {train: [{path: data/pairs.jsonl, format: saferlhf, limit: 96}], max_prompt_length: 40, max_response_length: 24, bad_records: skip}, optimizer: {lr: 2e-3, max_steps: 10, micro_batch_size: 2, gradient_accumulation: 2, warmup_steps: 2}}
parallel: {policy: {data_parallel: 2}, placement: $3, data_reader: $2, timeout_s: 10, deterministic: true}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
# run NAME READER PLACEMENT TWO_STAGES DIR_OF_RANK_0 DIR_OF_THE_OTHERS NP
run() {
  job "$1" "$2" "$3" "$4" >"$work/$1.yaml"
  mpi 1 -wdir "$work/$5" "$ALN" train "$work/$1.yaml" : -np $(( $7 - 1 )) -wdir "$work/$6" "$ALN" train "$work/$1.yaml" \
    >"$work/$1.out" 2>&1
}
same() {  # same RUN_A RUN_B: identical final tensors and logged losses
  "$PY" - "$work/$1" "$work/$2" <<'PY'
import json, sys
from safetensors.numpy import load_file
a, b = (load_file(d + "/final/model.safetensors") for d in sys.argv[1:3])
la, lb = ([json.loads(l)["loss"] for l in open(d + "/train_log.jsonl")] for d in sys.argv[1:3])
sys.exit(0 if a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a) and la == lb and len(la) >= 10 else 1)
PY
}

run hidden every_rank colocated "" A B 2; rc=$?
check "every_rank with the data hidden from rank 1 fails naming the file (rc $rc)" \
  "[[ $rc -ne 0 ]] && grep -q 'data/pairs.jsonl' '$work/hidden.out'"

run every every_rank colocated "" A A 2; rc=$?
check "every_rank, all ranks seeing the data (rc $rc): $(tail -1 "$work/every.out")" "[[ $rc -eq 0 ]]"
run lead lead colocated "" A B 2; rc=$?
check "data_reader: lead with the data only where rank 0 runs (rc $rc): $(tail -1 "$work/lead.out")" "[[ $rc -eq 0 ]]"
check "lead: same parameters and losses as every_rank" "same every lead"

run two-every every_rank separate yes A A 3; rc=$?
check "SFT then DPO, reference on its own rank, every_rank (rc $rc): $(tail -1 "$work/two-every.out")" "[[ $rc -eq 0 ]]"
run two-lead lead separate yes A B 3; rc=$?
check "the same with data_reader: lead, ranks 1 and 2 without the data (rc $rc): $(tail -1 "$work/two-lead.out")" \
  "[[ $rc -eq 0 ]]"
check "lead with a separate reference: same parameters and losses as every_rank" "same two-every two-lead"

start=$(date +%s)
run nowhere lead colocated "" B B 2; rc=$?
took=$(( $(date +%s) - start ))
check "data missing on rank 0 too: fails at once (rc $rc, ${took}s) with rank 0's error on rank 1" \
  "[[ $rc -ne 0 && $took -lt 10 ]] && grep -q 'rank 0 could not read the stage.s data: .*data/pairs.jsonl' '$work/nowhere.out'"

summary
