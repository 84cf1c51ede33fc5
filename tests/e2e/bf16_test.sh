#!/usr/bin/env bash
# model.dtype: bfloat16 (mixed precision: bfloat16 passes over float32 master weights) on the CPU:
# a job of SFT, DPO (cached reference sums), Ra-DPO (the reference's full distributions) and GRPO
# (generation) logs losses close to the float32 run's, writes a float32 final model, resumes after
# SIGKILL to the uninterrupted run's bits, runs fully sharded over 2 ranks to the unsharded run's
# bits and with GRPO's generation on a rollout rank to the colocated run's, and float16 or
# unsupported layouts are refused by key.
# Run from the repo root: bf16_test.sh ALN
set -uo pipefail
ALN="$1"; MPIEXEC=mpirun
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh
short_answers "$work/short.jsonl"

job() {  # job OUT DTYPE
  job_head bf16-test "$1" 3 | sed "s/^  chat_format: hh/  chat_format: hh\n  dtype: $2/"
  echo "stages:"
  sft_stage 6 1
  cat <<YAML
  - name: dpo
    trainer: {dpo: {beta: 0.1}}
    data: {train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}], max_prompt_length: 32, max_response_length: 16}
    optimizer: {lr: 3e-3, max_steps: 4, micro_batch_size: 4}
  - name: radpo
    trainer: {radpo: {}}
    data: {train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}], max_prompt_length: 32, max_response_length: 16}
    optimizer: {lr: 3e-3, max_steps: 4, micro_batch_size: 4}
  - name: grpo
    trainer: {grpo: {group_size: 4, beta: 0.04, max_new_tokens: 12, reward_rule: brevity}}
    data: {train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts, limit: 40}], max_prompt_length: 40}
    optimizer: {lr: 1e-2, max_steps: 4, micro_batch_size: 2}
YAML
  job_tail 1 3
}
job "$work/f32" float32 >"$work/f32.yaml"
job "$work/bf16" bfloat16 >"$work/bf16.yaml"
job "$work/killed" bfloat16 >"$work/killed.yaml"
"$ALN" train "$work/f32.yaml" >"$work/f32.out" 2>&1; rc_a=$?
"$ALN" train "$work/bf16.yaml" >"$work/bf16.out" 2>&1; rc_b=$?
check "both runs end (rc $rc_a, $rc_b): $(grep -v '^ ' "$work/bf16.out" | tail -1)" "[[ $rc_a -eq 0 && $rc_b -eq 0 ]]"
check "the run says it computes in bfloat16 over float32 master weights" \
  "grep -q 'mixed precision: passes in BFloat16 over float32 master weights' '$work/bf16.out'"
# SFT, DPO and Ra-DPO steps (the first 14) within 5% of float32; GRPO samples (a different model
# samples differently), so its steps only have to be finite.
cmp_out=$(python3 - "$work/f32/train_log.jsonl" "$work/bf16/train_log.jsonl" <<'PY'
import json, math, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x["loss"] - y["loss"]) / max(abs(x["loss"]), 1e-3) for x, y in zip(a[:14], b[:14]))
ok = len(a) == len(b) == 18 and worst < 0.05 and all(math.isfinite(r["loss"]) for r in b)
print(f"{'ok' if ok else 'bad'}: {len(b)} steps, max relative loss difference over SFT, DPO and Ra-DPO {worst:.4f}")
PY
)
echo "bfloat16 vs float32: $cmp_out"
check "bfloat16 losses close to float32 ($cmp_out)" "[[ '$cmp_out' == ok:* ]]"
dtype=$(python3 -c 'import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
print(sorted({v["dtype"] for k, v in h.items() if k != "__metadata__"}))' "$work/bf16/final/model.safetensors" 2>&1)
only_f32=no; [[ "$dtype" == "['F32']" ]] && only_f32=yes
check "the final model holds the float32 master weights (dtypes $dtype)" "[[ $only_f32 == yes ]]"
# Killed during Ra-DPO (global step 12), resumed: the uninterrupted run's losses, bit for bit.
run_and_kill "$work/killed.yaml" "$work/killed" 12
"$ALN" train "$work/killed.yaml" --resume >"$work/resumed.out" 2>&1; rc=$?
check "killed after $killed_at steps and resumed (rc $rc): bfloat16 losses and final model bit for bit" \
  "[[ $rc -eq 0 ]] && diff <(losses '$work/bf16/train_log.jsonl') <(losses '$work/killed/train_log.jsonl') >/dev/null && cmp -s '$work/bf16/final/model.safetensors' '$work/killed/final/model.safetensors'"
# Refused by key.
sed 's/dtype: bfloat16/dtype: float16/' "$work/bf16.yaml" >"$work/f16.yaml"
"$ALN" train "$work/f16.yaml" >/dev/null 2>"$work/f16.err"; rc=$?
check "float16 is refused (rc $rc): $(tail -1 "$work/f16.err")" \
  "[[ $rc -eq 2 ]] && tail -1 '$work/f16.err' | grep -q 'model.dtype: float16 needs loss scaling'"
sed 's/^parallel: .*/parallel: {policy: {data_parallel: 1}, placement: separate, deterministic: true}/' "$work/bf16.yaml" >"$work/sep.yaml"
mpi 2 "$ALN" train "$work/sep.yaml" >"$work/sep.err" 2>&1; rc=$?
check "bfloat16 with placement: separate is refused (rc $rc): $(grep -m1 'model.dtype' "$work/sep.err")" \
  "[[ $rc -ne 0 ]] && grep -q 'model.dtype: bfloat16 with parallel.placement: separate is not supported yet' '$work/sep.err'"
# Fully sharded over 2 ranks (float32 shards, each pass casting what it gathers, the reference
# sharded too for Ra-DPO, generation in step for GRPO, whose sampling snapshot, max_staleness 1, is
# sharded too and saved at the checkpoint of global step 15): the unsharded 2-rank bfloat16 run's bits.
for shard in none full; do
  sed "s/^parallel: .*/parallel: {policy: {data_parallel: 2, shard: $shard}, deterministic: true}/; s|^output_dir: .*|output_dir: $work/dp-$shard|; s/reward_rule: brevity}/reward_rule: brevity, max_staleness: 1}/" \
    "$work/bf16.yaml" >"$work/dp-$shard.yaml"
  mpi 2 "$ALN" train "$work/dp-$shard.yaml" >"$work/dp-$shard.out" 2>&1; rc=$?
  check "bfloat16 on 2 ranks, shard $shard, exits 0 (rc $rc): $(grep -v '^ ' "$work/dp-$shard.out" | tail -1)" "[[ $rc -eq 0 ]]"
done
# GRPO's generation on a rollout rank of its own: sent the float32 weights and the dtype they compute
# in, it samples what the colocated bfloat16 run samples.
sed "s/^parallel: .*/parallel: {policy: {data_parallel: 1}, rollout: {ranks: 1}, deterministic: true}/; s|^output_dir: .*|output_dir: $work/rr|" \
  "$work/bf16.yaml" >"$work/rr.yaml"
mpi 2 "$ALN" train "$work/rr.yaml" >"$work/rr.out" 2>&1; rc=$?
check "bfloat16 with a rollout rank (rc $rc): the colocated run's losses, rollouts and final model, bit for bit" \
  "[[ $rc -eq 0 ]] && diff <(losses '$work/bf16/train_log.jsonl') <(losses '$work/rr/train_log.jsonl') >/dev/null && cmp -s '$work/bf16/final/model.safetensors' '$work/rr/final/model.safetensors' && grep -q '4 weight versions sent' '$work/rr.out'"
# (The gradient norms are summed over the ranks' shards in another order: the last digit may differ.)
check "bfloat16 fully sharded over 2 ranks: the unsharded run's losses and final model, bit for bit" \
  "grep -q 'FSDP: parameters, gradients and AdamW moments sharded over 2 ranks' '$work/dp-full.out' && diff <(losses '$work/dp-none/train_log.jsonl' | cut -d' ' -f1-3) <(losses '$work/dp-full/train_log.jsonl' | cut -d' ' -f1-3) >/dev/null && cmp -s '$work/dp-none/final/model.safetensors' '$work/dp-full/final/model.safetensors'"
summary
