#!/usr/bin/env bash
# model.dtype: bfloat16 (mixed precision: bfloat16 passes over float32 master weights) on the CPU:
# a job of SFT, DPO (cached reference sums), Ra-DPO (the reference's full distributions) and GRPO
# (generation) logs losses close to the float32 run's, writes a float32 final model, resumes after
# SIGKILL to the uninterrupted run's bits, runs fully sharded over 2 ranks to the unsharded run's
# bits, with GRPO's generation on a rollout rank and with the reference on a rank of its own to the
# colocated run's, on 2 pipeline stages to one process's, and float16 is refused by key.
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
# The reference on a rank of its own (DPO's cached sums, Ra-DPO's hidden states with the head kept
# on the policy rank, GRPO's KL log-probs each step): stored in bfloat16 there as it is here, it
# answers with the colocated run's bits.
sed "s/^parallel: .*/parallel: {policy: {data_parallel: 1}, placement: separate, deterministic: true}/; s|^output_dir: .*|output_dir: $work/sep|" \
  "$work/bf16.yaml" >"$work/sep.yaml"
mpi 2 "$ALN" train "$work/sep.yaml" >"$work/sep.out" 2>&1; rc=$?
check "bfloat16 with the reference on a rank of its own (rc $rc): the colocated run's losses and final model, bit for bit" \
  "[[ $rc -eq 0 ]] && grep -q 'reference ranks answer the per-token hidden-state requests' '$work/sep.out' && diff <(losses '$work/bf16/train_log.jsonl') <(losses '$work/sep/train_log.jsonl') >/dev/null && cmp -s '$work/bf16/final/model.safetensors' '$work/sep/final/model.safetensors'"
# Two pipeline stages (a two-layer model, untied: tied embeddings add their two stages' gradients in
# another order; SFT, then DPO with the reference cut like the policy and scoring its cache through
# the stages): activations and their gradients cross in bfloat16, and the run equals one process's,
# bit for bit.
pipe_job() {  # pipe_job OUT STAGES
  job_head bf16-pipe "$1" 5 | sed "s/^  chat_format: hh/  chat_format: hh\n  dtype: bfloat16/; s/num_layers: 1/num_layers: 2/; s/max_position: 256}/max_position: 256, tie_embeddings: false}/"
  echo "stages:"
  sft_stage 3 2
  cat <<YAML
  - name: dpo
    trainer: {dpo: {beta: 0.1}}
    data: {train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}], max_prompt_length: 32, max_response_length: 16}
    optimizer: {lr: 3e-3, max_steps: 3, micro_batch_size: 2, gradient_accumulation: 2}
YAML
  job_tail 1 0 | sed "s/^parallel: .*/parallel: {policy: {data_parallel: 1, pipeline_parallel: $2}, deterministic: true}/"
}
pipe_job "$work/pipe1" 1 >"$work/pipe1.yaml"
pipe_job "$work/pipe2" 2 >"$work/pipe2.yaml"
"$ALN" train "$work/pipe1.yaml" >"$work/pipe1.out" 2>&1; rc_a=$?
mpi 2 "$ALN" train "$work/pipe2.yaml" >"$work/pipe2.out" 2>&1; rc_b=$?
# (The stages write the final model a file each: compared tensor by tensor, as bytes. The gradient
# norm adds the stages' sums of squares in another order: its last digit may differ.)
tensor_bytes() {  # tensor_bytes DIR: "name dtype sha256" of every tensor in DIR's safetensors files
  python3 - "$1" <<'PY'
import glob, hashlib, json, struct, sys
for path in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, v in header.items():
        if name != "__metadata__":
            a, b = v["data_offsets"]
            print(name, v["dtype"], hashlib.sha256(data[a:b]).hexdigest())
PY
}
check "bfloat16 on 2 pipeline stages (rc $rc_a, $rc_b): one process's losses and final model, bit for bit" \
  "[[ $rc_a -eq 0 && $rc_b -eq 0 ]] && [[ \$(wc -l <'$work/pipe2/train_log.jsonl') -eq 6 ]] && diff <(losses '$work/pipe1/train_log.jsonl' | cut -d' ' -f1-3) <(losses '$work/pipe2/train_log.jsonl' | cut -d' ' -f1-3) >/dev/null && diff <(tensor_bytes '$work/pipe1/final' | sort) <(tensor_bytes '$work/pipe2/final' | sort) >/dev/null"
# Fully sharded over 2 ranks (float32 shards, each pass casting what it gathers, the reference
# sharded too for Ra-DPO, generation in step for GRPO, whose sampling snapshot, max_staleness 1, is
# sharded too and saved at the checkpoint of global step 15): the unsharded 2-rank bfloat16 run's bits.
for shard in none full; do
  sed "s/^parallel: .*/parallel: {policy: {data_parallel: 2, shard: $shard}, deterministic: true}/; s|^output_dir: .*|output_dir: $work/dp-$shard|; s/reward_rule: brevity}/reward_rule: brevity, max_staleness: 1}/" \
    "$work/bf16.yaml" >"$work/dp-$shard.yaml"
  mpi 2 "$ALN" train "$work/dp-$shard.yaml" >"$work/dp-$shard.out" 2>&1; rc=$?
  check "bfloat16 on 2 ranks, shard $shard, exits 0 (rc $rc): $(grep -v '^ ' "$work/dp-$shard.out" | tail -1)" "[[ $rc -eq 0 ]]"
done
# The same 2 sharded ranks with the reference on a rank of its own (sent the weights put together
# on the first rank; Ra-DPO's head kept on the policy ranks in bfloat16, as the sharded reference's).
sed "s/^parallel: .*/parallel: {policy: {data_parallel: 2, shard: full}, placement: separate, deterministic: true}/; s|^output_dir: .*|output_dir: $work/sep-full|" \
  "$work/dp-full.yaml" >"$work/sep-full.yaml"
mpi 3 "$ALN" train "$work/sep-full.yaml" >"$work/sep-full.out" 2>&1; rc=$?
check "bfloat16 fully sharded with the reference on a rank of its own (rc $rc): the colocated sharded run's losses and final model, bit for bit" \
  "[[ $rc -eq 0 ]] && diff <(losses '$work/dp-full/train_log.jsonl') <(losses '$work/sep-full/train_log.jsonl') >/dev/null && cmp -s '$work/dp-full/final/model.safetensors' '$work/sep-full/final/model.safetensors'"
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
