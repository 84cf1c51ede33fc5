#!/usr/bin/env bash
# Generation on rollout ranks of their own (parallel.rollout.ranks), against the colocated run:
#  - 1 policy + 1 rollout rank (mpirun -np 2): GRPO's losses, grad norms and rewards equal the
#    colocated one-process run's bit for bit, its rollout dump is byte-identical, and the policy rank
#    sent the rollout rank one weight version per GRPO step (none for the SFT stage), on the tensor
#    channel the two share;
#  - 2 policy ranks sharing 1 rollout rank (-np 3) equal one process accumulating the two micro-batches;
#    policy rank 0 sends every version, which policy rank 1 samples from too;
#  - every step's micro-batches, and with max_staleness the snapshot window's steps, are asked for
#    ahead (parallel.rollout.ahead, the default) and each request is used;
#  - bounded staleness (max_staleness 2): the same losses as colocated, with a weight version sent
#    only when the sampling snapshot is renewed (6 for 16 steps); `ahead: false` gives the same bits;
#  - 2 fully sharded policy ranks (shard: full) + 1 rollout rank, on-policy and with a sharded
#    snapshot (max_staleness 2): one process's losses bit for bit, the weights sent by policy rank 0
#    as the ranks gather them;
#  - HAIR (its own samples and shadow rewards) and the controllable method's rl objective equal their
#    colocated runs bit for bit;
#  - SIGKILL of the rollout rank ends the job non-zero within 60 s; --resume from the last checkpoint
#    (inside a staleness window) then reproduces the uninterrupted run's losses and dump bit for bit,
#    taking the rollouts that checkpoint kept (generated, not yet trained on) instead of asking again;
#  - config errors: rollout ranks in a job that samples nothing, and the wrong process count.
# Usage: rollout_ranks_test.sh ALN MPIEXEC
set -uo pipefail
ALN="$1"; MPIEXEC="$2"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; pkill -9 -f "$work/" 2>/dev/null; [[ -z "${KEEP:-}" ]] && rm -rf "$work"' EXIT
pid=""
source tests/dist/fault_lib.sh

short_answers "$work/short.jsonl"

# job OUT ACCUM DP ROLLOUT_RANKS [STALENESS] [METHOD]
job() {
  job_head rollout-test "$1" 5
  local method="grpo: {group_size: 4, beta: 0.04, max_new_tokens: 16, reward_rule: brevity, max_staleness: ${5:-0}}"
  local data="examples/data/xstest/xstest_prompts_shared.csv"
  if [[ "${6:-grpo}" == hair ]]; then
    method="hair: {group_size: 4, max_new_tokens: 12, irl_lr: 3e-3, per_category: 20}"
    data="examples/data/strongreject/strongreject_dataset.csv"
  elif [[ "${6:-grpo}" == ctl ]]; then
    method="controllable: {objective: rl, helpful_rule: length, harmless_rule: refusal, max_new_tokens: 12, group_size: 4}"
  fi
  echo "stages:"
  sft_stage 8 2
  cat <<YAML
  - name: ${6:-grpo}
    trainer: {$method}
    data:
      train: [{path: $data, format: prompts}]
      max_prompt_length: 40
      max_response_length: 64
    optimizer: {lr: 1e-2, max_steps: 16, micro_batch_size: 2, gradient_accumulation: $2}
rollouts: {dump: true}
parallel: {policy: {data_parallel: $3${SHARD:+, shard: $SHARD}}, rollout: {ranks: $4${AHEAD:+, ahead: $AHEAD}}, deterministic: true, timeout_s: 20}
checkpoint: {every_steps: 4, keep_last: 2}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
stage_losses() { losses "$1" reward_mean | grep -v " sft "; }

job "$work/one" 2 1 0 >"$work/one.yaml"
"$ALN" train "$work/one.yaml" >/dev/null 2>"$work/one.err"; rc=$?
check "colocated baseline exits 0 (rc $rc): $(tail -1 "$work/one.err")" '[[ $rc -eq 0 ]]'
stage_losses "$work/one/train_log.jsonl" >"$work/one.losses"

job "$work/rr" 2 1 1 >"$work/rr.yaml"
mpi 2 "$ALN" train "$work/rr.yaml" >"$work/rr.out" 2>&1; rc=$?
check "1 policy + 1 rollout rank exits 0 (rc $rc): $(tail -1 "$work/rr.out")" '[[ $rc -eq 0 ]]'
check "the policy's log says where generation runs" \
  'grep -q "rollout ranks: generation runs on world ranks 1..1 (policy rank r asks world rank 1 + r % 1)" "$work/rr.out"'
stage_losses "$work/rr/train_log.jsonl" >"$work/rr.losses"
check "rollout ranks: the colocated run's 16 GRPO losses, grad norms and rewards, bit for bit" \
  '[[ $(wc -l <"$work/one.losses") -eq 16 ]] && diff -q "$work/one.losses" "$work/rr.losses" >/dev/null'
check "rollout ranks: a byte-identical rollout dump" \
  'cmp -s "$work/one/rollouts/grpo/rank0.jsonl" "$work/rr/rollouts/grpo/rank0.jsonl"'
check "one weight version sent per GRPO step: $(grep -o "[0-9]* weight versions sent" "$work/rr.out" | head -1)" \
  'grep -q "): 16 weight versions sent" "$work/rr.out"'
check "the weights went on the tensor channel: $(grep -o "[0-9.]* MiB on the tensor channel" "$work/rr.out" | head -1)" \
  'grep -qE "\): 16 weight versions sent, 0 found already there \([1-9][0-9.]* MiB on the tensor channel" "$work/rr.out"'
check "each step's second micro-batch was asked for ahead with its first: $(grep -o "[0-9]* of [0-9]* requests asked for ahead were used" "$work/rr.out" | head -1)" \
  'grep -q "32 of 32 requests asked for ahead were used" "$work/rr.out"'

job "$work/rr2" 1 2 1 >"$work/rr2.yaml"
mpi 3 "$ALN" train "$work/rr2.yaml" >"$work/rr2.out" 2>&1; rc=$?
check "2 policy ranks sharing 1 rollout rank exit 0 (rc $rc): $(tail -1 "$work/rr2.out")" '[[ $rc -eq 0 ]]'
stage_losses "$work/rr2/train_log.jsonl" >"$work/rr2.losses"
check "2 policy ranks + 1 rollout rank equal one process accumulating 2 micro-batches, bit for bit" \
  'diff -q "$work/one.losses" "$work/rr2.losses" >/dev/null'
check "policy rank 0 sent every version (policy rank 1 samples from the same copy): $(grep -o "[0-9]* weight versions sent, [0-9]* found" "$work/rr2.out")" \
  'grep -q "): 16 weight versions sent, 0 found" "$work/rr2.out"'

job "$work/stale" 2 1 0 2 >"$work/stale.yaml"
"$ALN" train "$work/stale.yaml" >/dev/null 2>&1
job "$work/stale_rr" 2 1 1 2 >"$work/stale_rr.yaml"
mpi 2 "$ALN" train "$work/stale_rr.yaml" >"$work/stale_rr.out" 2>&1; rc=$?
stage_losses "$work/stale/train_log.jsonl" >"$work/stale.losses"
stage_losses "$work/stale_rr/train_log.jsonl" >"$work/stale_rr.losses"
check "max_staleness 2 on a rollout rank (rc $rc): the colocated losses bit for bit" \
  '[[ $rc -eq 0 && $(wc -l <"$work/stale.losses") -eq 16 ]] && diff -q "$work/stale.losses" "$work/stale_rr.losses" >/dev/null'
check "max_staleness 2: a weight version sent only when the snapshot is renewed ($(grep -o "[0-9]* weight versions sent" "$work/stale_rr.out" | head -1))" \
  'grep -q "): 6 weight versions sent" "$work/stale_rr.out"'
check "max_staleness 2: each snapshot's 3 steps (6 micro-batches; 2 in the last) asked for at its renewal: $(grep -o "[0-9]* of [0-9]* requests asked for ahead were used" "$work/stale_rr.out" | head -1)" \
  'grep -q "32 of 32 requests asked for ahead were used" "$work/stale_rr.out"'
AHEAD=false job "$work/stale_one" 2 1 1 2 >"$work/stale_one.yaml"
mpi 2 "$ALN" train "$work/stale_one.yaml" >"$work/stale_one.out" 2>&1; rc=$?
check "ahead: false (each rollout asked for when needed, rc $rc): the same losses and rollout dump, nothing asked ahead" \
  '[[ $rc -eq 0 ]] && diff -q "$work/stale.losses" <(stage_losses "$work/stale_one/train_log.jsonl") >/dev/null && cmp -s "$work/stale/rollouts/grpo/rank0.jsonl" "$work/stale_one/rollouts/grpo/rank0.jsonl" && grep -q "0 of 0 requests asked for ahead" "$work/stale_one.out"'

# Fully sharded policy ranks (shard: full) sharing 1 rollout rank: every version is gathered a unit
# at a time by both policy ranks and sent on by rank 0 (on the tensor channel) as it passes; rank 1
# finds it there. On-policy,
# and with max_staleness 2 (a snapshot sharded as the policy is).
SHARD=full job "$work/rr2_fsdp" 1 2 1 >"$work/rr2_fsdp.yaml"
mpi 3 "$ALN" train "$work/rr2_fsdp.yaml" >"$work/rr2_fsdp.out" 2>&1; rc=$?
check "2 fully sharded policy ranks + 1 rollout rank (rc $rc): one process's losses bit for bit; rank 0: $(grep -o "[0-9]* weight versions sent, [0-9]* found" "$work/rr2_fsdp.out")" \
  '[[ $rc -eq 0 ]] && grep -q "FSDP: parameters, gradients and AdamW moments sharded over 2 ranks" "$work/rr2_fsdp.out" && diff -q "$work/one.losses" <(stage_losses "$work/rr2_fsdp/train_log.jsonl") >/dev/null && grep -q "): 16 weight versions sent, 0 found" "$work/rr2_fsdp.out"'
SHARD=full job "$work/stale_fsdp" 1 2 1 2 >"$work/stale_fsdp.yaml"
mpi 3 "$ALN" train "$work/stale_fsdp.yaml" >"$work/stale_fsdp.out" 2>&1; rc=$?
check "max_staleness 2 with a sharded snapshot on 2 fully sharded ranks + 1 rollout rank (rc $rc): one process's losses bit for bit, 6 versions sent" \
  '[[ $rc -eq 0 ]] && diff -q "$work/stale.losses" <(stage_losses "$work/stale_fsdp/train_log.jsonl") >/dev/null && grep -q "): 6 weight versions sent, 0 found" "$work/stale_fsdp.out"'

job "$work/hair" 2 1 0 0 hair >"$work/hair.yaml"
"$ALN" train "$work/hair.yaml" >/dev/null 2>"$work/hair.err"
job "$work/hair_rr" 2 1 1 0 hair >"$work/hair_rr.yaml"
mpi 2 "$ALN" train "$work/hair_rr.yaml" >"$work/hair_rr.out" 2>&1; rc=$?
check "HAIR on a rollout rank (rc $rc): the colocated losses and rollout dump, bit for bit" \
  '[[ $rc -eq 0 ]] && diff -q <(stage_losses "$work/hair/train_log.jsonl") <(stage_losses "$work/hair_rr/train_log.jsonl") >/dev/null && cmp -s "$work/hair/rollouts/hair/rank0.jsonl" "$work/hair_rr/rollouts/hair/rank0.jsonl"'

job "$work/ctl" 2 1 0 0 ctl >"$work/ctl.yaml"
"$ALN" train "$work/ctl.yaml" >/dev/null 2>"$work/ctl.err"
job "$work/ctl_rr" 2 1 1 0 ctl >"$work/ctl_rr.yaml"
mpi 2 "$ALN" train "$work/ctl_rr.yaml" >"$work/ctl_rr.out" 2>&1; rc=$?
check "controllable (objective rl) on a rollout rank (rc $rc): the colocated losses and rollout dump, bit for bit, every request asked ahead used: $(grep -o "[0-9]* of [0-9]* requests asked for ahead were used" "$work/ctl_rr.out" | head -1)" \
  '[[ $rc -eq 0 ]] && [[ -s "$work/ctl/rollouts/ctl/rank0.jsonl" ]] && diff -q <(stage_losses "$work/ctl/train_log.jsonl") <(stage_losses "$work/ctl_rr/train_log.jsonl") >/dev/null && cmp -s "$work/ctl/rollouts/ctl/rank0.jsonl" "$work/ctl_rr/rollouts/ctl/rank0.jsonl" && grep -q "32 of 32 requests asked for ahead were used" "$work/ctl_rr.out"'

# SIGKILL of the rollout rank (world rank 1) once 5 GRPO steps are logged (8 SFT + 5), with
# max_staleness 2: the checkpoint of step 4 lies inside the snapshot window of steps 4-6 (stage
# steps from 1), which the resumed run asks for again.
job "$work/kill" 2 1 1 2 >"$work/kill.yaml"
signal_rank 2 "$work/kill.yaml" "$work/kill.out" 1 KILL "$work/kill/train_log.jsonl" 13
check "found the rollout rank while the policy trains" '[[ -n "$victim" ]]'
check "SIGKILL of the rollout rank ends the job non-zero within 60 s (rc $fault_rc, ${fault_took}s)" \
  '[[ $fault_rc -ne 0 && $fault_took -le 60 ]]'
check "the job's output names the rank that died: $(grep -m1 -E "process rank 1 with PID|mpirun rank 1\)" "$work/kill.out" | cut -c1-160)" \
  'grep -qE "process rank 1 with PID [0-9]+ .*exited on signal 9|mpirun rank 1\)" "$work/kill.out"'
kept="$work/kill/checkpoints/step-00000012/trainer/rollouts_unconsumed.safetensors"
check "the checkpoint of GRPO step 4 keeps the window's rollouts not yet trained on (steps 5-6): $(ls "$kept" 2>&1 | cut -c1-160)" \
  '[[ -s "$kept" ]]'
mpi 2 "$ALN" train "$work/kill.yaml" --resume >"$work/kill2.out" 2>&1; rc=$?
check "--resume after the kill exits 0 (rc $rc): $(tail -1 "$work/kill2.out")" '[[ $rc -eq 0 ]]'
stage_losses "$work/kill/train_log.jsonl" >"$work/kill.losses"
check "resumed inside a snapshot window: the uninterrupted losses and a byte-identical rollout dump" \
  'diff -q "$work/stale.losses" "$work/kill.losses" >/dev/null && cmp -s "$work/stale/rollouts/grpo/rank0.jsonl" "$work/kill/rollouts/grpo/rank0.jsonl"'
check "the resumed run took the 4 kept rollouts instead of generating them again: $(grep -o "[0-9]* answers taken from the checkpoint" "$work/kill2.out")" \
  'grep -q "4 rollouts were generated before the checkpoint and not yet trained on: kept in it" "$work/kill2.out" && grep -q "4 answers taken from the checkpoint" "$work/kill2.out"'

# Config errors, named by key path.
job "$work/idle" 2 1 1 | sed "/  - name: grpo/,/max_steps: 16/d" >"$work/idle.yaml"
"$ALN" train "$work/idle.yaml" --dry-run >/dev/null 2>"$work/idle.err"; rc=$?
check "rollout ranks in a job that samples nothing are refused (rc $rc): $(head -1 "$work/idle.err")" \
  '[[ $rc -eq 2 ]] && grep -q "parallel.rollout.ranks: no stage samples in its training steps" "$work/idle.err"'
"$ALN" train "$work/rr.yaml" >/dev/null 2>"$work/np.err"; rc=$?
check "one process for a job with a rollout rank is refused with the count that fits: $(head -1 "$work/np.err" | cut -c1-160)" \
  '[[ $rc -eq 2 ]] && grep -q "the job needs 2 processes (.*plus parallel.rollout.ranks); start it with .mpirun -np 2" "$work/np.err"'
summary
