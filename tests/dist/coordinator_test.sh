#!/usr/bin/env bash
# The coordinator as a process of its own (parallel.coordinator: own_rank) under a real mpirun: world
# rank 0 loads no model; it reads the data, writes the logs, checkpoints and the final model from
# what the policy's first rank (world rank 1) sends it, serves /metrics and watches the heartbeats.
# Rank 0 runs in directory A, which holds the data; the other ranks run in B, which does not.
#  - DPO on 2 policy ranks + the coordinator (3 processes) ends bit for bit where the same job does
#    on 2 processes with the coordinator on the policy's first rank: parameters, logged losses and
#    held-out numbers; the coordinator wrote the checkpoints and printed the report;
#  - killed at step 7 and resumed from the coordinator's step-5 checkpoint: the same again; that
#    checkpoint also resumes a job without a coordinator of its own;
#  - a 2-stage pipeline, and a reference on a rank of its own (4 processes), with the coordinator:
#    the same as without it; so are fully sharded policy ranks, whose checkpoint shards the
#    coordinator moves into its checkpoints;
#  - SFT then HAIR: the trainer's checkpoint state and its end-of-stage files (shadow reward models)
#    arrive at the coordinator; the same files and final model as without it;
#  - rank 0's /metrics carries the coordinator's request counters and the policy ranks' series;
#  - faults: SIGKILL of a policy rank or of the coordinator ends the job at once; SIGSTOP of the
#    coordinator makes the policy's next request time out after timeout_s, naming the coordinator;
#  - a process count that leaves no rank for the coordinator is refused saying what fits.
# Usage: coordinator_test.sh ALN MPIEXEC PYTHON
set -uo pipefail
ALN="$(realpath "$1")"; MPIEXEC="$2"; PY="$(realpath -s "$3" 2>/dev/null || echo "$3")"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$(pwd)"
source tests/e2e/train_lib.sh
source tests/dist/fault_lib.sh
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; pkill -9 -f "$work/" 2>/dev/null; [[ -z "${KEEP:-}" ]] && rm -rf "$work"' EXIT
pid=""

mkdir -p "$work/A/data" "$work/B"
cp examples/data/xstest/xstest_pairs_shared.jsonl "$work/A/data/pairs.jsonl"
short_answers "$work/A/data/short.jsonl"

# job NAME COORDINATOR [PARALLEL_EXTRA] [STEPS] [METRICS]: DPO (or $STAGES) on 2 policy ranks, the
# data read by rank 0 (data_reader: lead), checkpoints every 5 steps.
job() {
  local stages="${STAGES:-}" metrics="${5:-}"
  [[ -z "$stages" ]] && stages="  - {name: dpo, trainer: {dpo: {}}, data: {train: [{path: data/pairs.jsonl, format: saferlhf, limit: 96}], max_prompt_length: 40, max_response_length: 24, bad_records: skip}, optimizer: {lr: 2e-3, max_steps: ${4:-10}, micro_batch_size: 2, gradient_accumulation: 2, warmup_steps: 2}}"
  [[ -z "$metrics" ]] && metrics="{enabled: false, progress_bar: false}"
  cat <<YAML
name: coordinator
output_dir: $work/$1
seed: 5
model:
  tokenizer: $repo/examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_position: 256}
stages:
$stages
parallel: {policy: {data_parallel: 2}, coordinator: $2, data_reader: lead, timeout_s: 5, heartbeat_s: 0.5, deterministic: true${3:-}}
checkpoint: {every_steps: 5, keep_last: 3}
metrics: $metrics
runtime: {threads: 1}
YAML
}
# run NAME NP [--resume]: rank 0 in A, the others in B (with_policy jobs: every rank in A).
run() {
  if grep -q "coordinator: own_rank" "$work/$1.yaml"; then
    mpi 1 -wdir "$work/A" "$ALN" train "$work/$1.yaml" ${3:-} : -np $(( $2 - 1 )) -wdir "$work/B" "$ALN" train \
      "$work/$1.yaml" ${3:-} >>"$work/$1.out" 2>&1
  else
    mpi "$2" -wdir "$work/A" "$ALN" train "$work/$1.yaml" ${3:-} >>"$work/$1.out" 2>&1
  fi
}
same() {  # same RUN_A RUN_B [FILES...]: identical final tensors, logged losses, held-out numbers, and FILES
  "$PY" - "$work/$1" "$work/$2" "${@:3}" <<'PY'
import filecmp, json, sys
from safetensors.numpy import load_file
import glob
# Every shard of the final model (a pipeline writes one per stage).
a, b = ({k: v for f in sorted(glob.glob(d + "/final/*.safetensors")) for k, v in load_file(f).items()}
        for d in sys.argv[1:3])
la, lb = ([json.loads(l)["loss"] for l in open(d + "/train_log.jsonl")] for d in sys.argv[1:3])
ea, eb = ([json.loads(l)["metrics"] for l in open(d + "/eval.jsonl")] for d in sys.argv[1:3])
files = all(filecmp.cmp(sys.argv[1] + "/" + f, sys.argv[2] + "/" + f, shallow=False) for f in sys.argv[3:])
ok = a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a) and la == lb and len(la) >= 10 and ea == eb
sys.exit(0 if ok and files else 1)
PY
}

job plain with_policy >"$work/plain.yaml"
run plain 2; rc=$?
check "DPO on 2 ranks, coordinator on the policy's first rank (rc $rc)" "[[ $rc -eq 0 ]]"
job coord own_rank >"$work/coord.yaml"
run coord 3; rc=$?
check "the same with the coordinator on a rank of its own, 3 processes, data only where it runs (rc $rc): $(tail -1 "$work/coord.out")" \
  "[[ $rc -eq 0 ]]"
check "own_rank: same parameters, losses and held-out numbers as with_policy" "same plain coord"
check "the coordinator read the data, wrote the model and printed the report" \
  "grep -q 'r0/coordinator\] stage 1: read 87 examples' '$work/coord.out' && grep -q 'r0/coordinator\] final model written' '$work/coord.out' && grep -q '^dpo .*preference_accuracy' '$work/coord.out'"
check "the coordinator wrote complete checkpoints at steps 5 and 10" \
  "[[ -f '$work/coord/checkpoints/step-00000005/MANIFEST.json' && -f '$work/coord/checkpoints/step-00000010/MANIFEST.json' ]]"

# Killed after step 7, resumed from the step-5 checkpoint the coordinator wrote.
job killed own_rank >"$work/killed.yaml"
kill_when_logged "$work/killed.yaml" "$work/killed/train_log.jsonl" 7 run killed 3
check "the killed run logged step 7, left the step-5 checkpoint and no final model" \
  "grep -q '\"global_step\":7,' '$work/killed/train_log.jsonl' && [[ -f '$work/killed/checkpoints/step-00000005/MANIFEST.json' && ! -e '$work/killed/final' ]]"
rm -rf "$work/killed/checkpoints/step-00000010"
run killed 3 --resume; rc=$?
check "--resume with the coordinator (rc $rc): same parameters, losses and held-out numbers as uninterrupted" \
  "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000005' '$work/killed.out' && same coord killed"
mkdir -p "$work/handover"
cp -r "$work/coord/checkpoints" "$work/coord/reference_cache" "$work/handover/"
rm -rf "$work/handover/checkpoints/step-00000010"
cp "$work/coord/train_log.jsonl" "$work/coord/eval.jsonl" "$work/handover/"  # resuming drops what follows step 5
job handover with_policy >"$work/handover.yaml"
run handover 2 --resume; rc=$?
check "the coordinator's checkpoint resumes a job without a coordinator of its own (rc $rc), ending the same" \
  "[[ $rc -eq 0 ]] && same coord handover"

# A pipelined policy, and the reference on a rank of its own, each with the coordinator.
job pp with_policy ", policy: {pipeline_parallel: 2}" | sed 's/policy: {data_parallel: 2}, //' >"$work/pp.yaml"
run pp 2; rc=$?
job pp-coord own_rank ", policy: {pipeline_parallel: 2}" | sed 's/policy: {data_parallel: 2}, //' >"$work/pp-coord.yaml"
run pp-coord 3; rc2=$?
check "2 pipeline stages with and without the coordinator's own rank (rc $rc, $rc2): the same" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && same pp pp-coord"
job sep own_rank ", placement: separate" >"$work/sep.yaml"
run sep 4; rc=$?
check "coordinator + 2 policy ranks + the reference on its own rank, 4 processes (rc $rc): same as plain" \
  "[[ $rc -eq 0 ]] && grep -q 'r1/policy\] placement separate: the reference runs on world ranks 3..3' '$work/sep.out' && same plain sep"

# Fully sharded policy ranks (parallel.policy.shard: full) write their own checkpoint shards, which the
# coordinator's process moves into the checkpoint it writes.
job fsdp with_policy | sed 's/policy: {data_parallel: 2}/policy: {data_parallel: 2, shard: full}/' >"$work/fsdp.yaml"
run fsdp 2; rc=$?
job fsdp-coord own_rank | sed 's/policy: {data_parallel: 2}/policy: {data_parallel: 2, shard: full}/' >"$work/fsdp-coord.yaml"
run fsdp-coord 3; rc2=$?
check "shard: full with and without the coordinator's own rank (rc $rc, $rc2): the same; its checkpoints hold the ranks' shards" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && same fsdp fsdp-coord && [[ -f '$work/fsdp-coord/checkpoints/step-00000010/shards/rank-00001-of-00002.safetensors' && ! -e '$work/fsdp-coord/checkpoints/step-00000010/model' ]] && ! ls -a '$work/fsdp-coord/checkpoints' | grep -q shards"

# SFT then HAIR: the trainer's state in checkpoints and its shadow reward models at the end.
hair_stages="  - {name: sft, trainer: {sft: {}}, data: {train: [{path: data/short.jsonl, format: sft_text}], max_prompt_length: 32, max_response_length: 16}, optimizer: {lr: 1e-2, max_steps: 6, micro_batch_size: 2}}
  - {name: hair, trainer: {hair: {group_size: 2, max_new_tokens: 8, irl_lr: 3e-3, per_category: 4}}, data: {train: [{path: $repo/examples/data/strongreject/strongreject_dataset.csv, format: prompts}], max_prompt_length: 40, max_response_length: 32}, optimizer: {lr: 1e-2, max_steps: 4, micro_batch_size: 2}}"
STAGES="$hair_stages" job hair with_policy >"$work/hair.yaml"
run hair 2; rc=$?
STAGES="$hair_stages" job hair-coord own_rank >"$work/hair-coord.yaml"
run hair-coord 3; rc2=$?
shadow=$(cd "$work/hair" 2>/dev/null && find hair/shadow_rewards -type f 2>/dev/null | sort)
check "SFT then HAIR with and without the coordinator's own rank (rc $rc, $rc2): same model, losses and $(echo "$shadow" | wc -w) shadow reward files" \
  "[[ $rc -eq 0 && $rc2 -eq 0 && -n '$shadow' ]] && same hair hair-coord $(echo $shadow)"
check "HAIR's state is in the coordinator's checkpoints" \
  "ls '$work/hair-coord/checkpoints/step-00000010/trainer/' | grep -q ."

# Metrics, then SIGKILL of a policy rank; SIGSTOP and SIGKILL of the coordinator.
job live own_rank "" 100000 "{enabled: true, port: 0, progress_bar: false}" \
  | sed "s|path: data/pairs.jsonl|path: $work/A/data/pairs.jsonl|" >"$work/live.yaml"
signal_rank 3 "$work/live.yaml" "$work/live.out" 2 KILL "$work/live/train_log.jsonl" 3 \
  "scrape_until '$work/live.out' 'aln_train_loss{.*rank=\"1\".*role=\"policy\"'"
check "rank 0's /metrics: the coordinator's request counter and the policy's loss from world rank 1" \
  "grep -q 'aln_coordinator_requests_total{.*role=\"coordinator\".*method=\"train\"' '$work/fault.metrics' && grep -q 'aln_train_loss{.*rank=\"1\".*role=\"policy\"' '$work/fault.metrics'"
check "SIGKILL of policy rank 2: the job ends non-zero within 60 s (rc $fault_rc, ${fault_took}s)" \
  "[[ -n '$victim' && $fault_rc -ne 0 && $fault_took -le 60 ]]"
# (One policy rank: with two, the other one's gradient sum could time out first, naming rank 1.)
sed 's/policy: {data_parallel: 2}/policy: {data_parallel: 1}/' "$work/live.yaml" >"$work/solo.yaml"
rm -rf "$work/live"
signal_rank 2 "$work/solo.yaml" "$work/stop.out" 0 STOP "$work/live/train_log.jsonl" 3
check "SIGSTOP of the coordinator: the policy's request times out after timeout_s, naming it (rc $fault_rc, ${fault_took}s)" \
  "[[ -n '$victim' && $fault_rc -eq 1 && $fault_took -le 15 ]] && grep -q 'the coordinator (world rank 0), request' '$work/stop.out'"
rm -rf "$work/live"
signal_rank 2 "$work/solo.yaml" "$work/kill0.out" 0 KILL "$work/live/train_log.jsonl" 3
check "SIGKILL of the coordinator: the job ends non-zero within 60 s (rc $fault_rc, ${fault_took}s)" \
  "[[ -n '$victim' && $fault_rc -ne 0 && $fault_took -le 60 ]]"

# Layout errors.
mpi 2 -wdir "$work/A" "$ALN" train "$work/coord.yaml" >"$work/two.out" 2>&1; rc=$?
check "own_rank with data_parallel 2 on 2 processes is refused saying 3 fit (rc $rc)" \
  "[[ $rc -eq 2 ]] && grep -q 'plus 1 for the coordinator (parallel.coordinator: own_rank) but the job runs on 2; start it with .mpirun -np 3' '$work/two.out'"
"$ALN" train "$work/coord.yaml" >"$work/one.out" 2>&1; rc=$?
check "outside mpirun the CLI says the job needs 3 processes (rc $rc)" \
  "[[ $rc -eq 2 ]] && grep -q 'needs 3 processes .*coordinator' '$work/one.out'"

summary
