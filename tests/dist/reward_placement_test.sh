#!/usr/bin/env bash
# Reward models and GRPO's reference on ranks of their own (parallel.placement: separate), under a
# real mpirun. GRPO scores its rollouts with a random reward model made by transformers:
#  - 2 policy ranks with the reward model on 1 and on 2 further ranks end bit for bit where the
#    colocated run does (parameters, every loss and the logged reward-model scores);
#  - DPO then GRPO with a KL term (beta > 0), the reference and the reward model each on a rank of
#    its own (4 processes): the reference rank computes DPO's sums up front, then answers GRPO's
#    per-token log-prob requests each step; the same as colocated, bit for bit, KL included;
#  - the same with GRPO's generation on a rollout rank besides (5 processes: every role separate);
#  - that job killed mid-GRPO and resumed (rank 0 kept the reference for the checkpoint and sends
#    it again) ends where the uninterrupted one does;
#  - the same under model.dtype: bfloat16 (the reward rank stores the model in bfloat16 as colocated);
#  - the reward ranks say what they served (logs; request counters on rank 0's /metrics);
#  - the layout check counts the reward ranks; a reward model that does not load names itself;
#  - a reward rank killed mid-run ends the job non-zero within 60 s; one frozen mid-run (one policy
#    rank, one reward rank) makes the policy's score request time out (parallel.timeout_s) naming the
#    reward rank, with the flight recorder.
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PY="$3"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; pkill -9 -f "$work/" 2>/dev/null; [[ -z "${KEEP:-}" ]] && rm -rf "$work"' EXIT
pid=""
source tests/dist/fault_lib.sh

"$PY" tests/e2e/make_random_rm.py "$work/rm" >/dev/null 2>&1
check "a random reward model was made" "[[ -f '$work/rm/model.safetensors' ]]"

job() {  # job NAME PLACEMENT REWARD_RANKS [WITH_DPO] [REWARD_PATH] [GRPO_STEPS] [BETA]
  cat <<YAML
name: reward-placement
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_position: 256}
stages:
YAML
  if [[ -n "${4:-}" ]]; then
    echo "  - {name: dpo, trainer: {dpo: {}}, data: {train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf, limit: 48}], max_prompt_length: 40, max_response_length: 24, bad_records: skip}, optimizer: {lr: 2e-3, max_steps: 4, micro_batch_size: 2, gradient_accumulation: 2}}"
  fi
  cat <<YAML
  - name: grpo
    trainer: {grpo: {group_size: 4, beta: ${7:-0}, max_new_tokens: 8}}
    reward_models: [{name: judge, path: ${5:-$work/rm}}]
    data: {train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts}], max_prompt_length: 32}
    optimizer: {lr: 1e-2, max_steps: ${6:-10}, micro_batch_size: 2, gradient_accumulation: 2}
eval: {max_examples: 4}
parallel: {policy: {data_parallel: 2}, placement: $2, reward: {data_parallel: $3}, timeout_s: 10, deterministic: true}
checkpoint: {every_steps: 5}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
train() {  # train NAME NP PLACEMENT REWARD_RANKS [WITH_DPO] [REWARD_PATH] [GRPO_STEPS] [BETA]
  job "$1" "${@:3}" >"$work/$1.yaml"
  mpi "$2" "$ALN" train "$work/$1.yaml" >"$work/$1.out" 2>&1
  local rc=$?
  check "$1 exits 0 (rc $rc): $(tail -2 "$work/$1.out")" "[[ $rc -eq 0 ]]"
}
same() {  # same RUN_A RUN_B: identical final tensors, logged losses and reward-model scores
  "$PY" - "$work/$1" "$work/$2" <<'PY'
import json, sys
from safetensors.numpy import load_file
a, b = (load_file(d + "/final/model.safetensors") for d in sys.argv[1:3])
rows = [[json.loads(l) for l in open(d + "/train_log.jsonl")] for d in sys.argv[1:3]]
la, lb = ([(r["loss"], r["metrics"].get("reward_model_0")) for r in rs] for rs in rows)
scored = [s for _, s in la if s is not None]
sys.exit(0 if a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a) and la == lb and len(scored) >= 10 else 1)
PY
}

train colocated 2 colocated 1
train separate 3 separate 1
train separate2 4 separate 2
check "reward model on 1 separate rank: same parameters, losses and scores as colocated" "same colocated separate"
check "reward model on 2 separate ranks: same parameters, losses and scores as colocated" "same colocated separate2"
check "the policy logs where the reward models run" \
  "grep -q 'placement separate: the reward models run on world ranks 2..3' '$work/separate2.out'"
check "and which reward rank serves which policy rank" \
  "grep -q 'policy rank r asks world rank 2 + r % 2' '$work/separate2.out'"

# Mixed precision: the reward rank stores the judge in bfloat16, as a colocated run does.
for placement in colocated separate; do
  job bf16-$placement $placement 1 >"$work/bf16-$placement.yaml"
  sed -i 's/^  chat_format: hh/  chat_format: hh\n  dtype: bfloat16/' "$work/bf16-$placement.yaml"
  mpi $([[ $placement == separate ]] && echo 3 || echo 2) "$ALN" train "$work/bf16-$placement.yaml" \
    >"$work/bf16-$placement.out" 2>&1
  check "bf16-$placement exits 0 (rc $?): $(tail -1 "$work/bf16-$placement.out")" "[[ -f '$work/bf16-$placement/final/model.safetensors' ]]"
done
check "bfloat16, reward model on a rank of its own: same parameters, losses and scores as colocated" \
  "grep -q 'mixed precision: passes in BFloat16' '$work/bf16-separate.out' && same bf16-colocated bf16-separate"

train two-colocated 2 colocated 1 yes "" 10 0.04
train two-separate 4 separate 1 yes "" 10 0.04
check "DPO then GRPO with a KL term, reference and reward model each on a rank of its own: same as colocated" \
  "same two-colocated two-separate"
# Every role on ranks of its own: 2 policy ranks, the reference, the reward model and GRPO's generation
# on a rollout rank (5 processes; the rollout ranks come last).
job two-rollout separate 1 yes "" 10 0.04 >"$work/two-rollout.yaml"
sed -i 's/reward: {data_parallel: 1}/reward: {data_parallel: 1}, rollout: {ranks: 1}/' "$work/two-rollout.yaml"
mpi 5 "$ALN" train "$work/two-rollout.yaml" >"$work/two-rollout.out" 2>&1; rc=$?
check "policy, reference, reward model and rollouts each on ranks of their own (rc $rc): same as colocated" \
  "[[ $rc -eq 0 ]] && grep -q 'rollout ranks: generation runs on world ranks 4..4' '$work/two-rollout.out' && same two-colocated two-rollout"
check "the KL term is in the compared losses" \
  "grep -q '\"kl\":[0-9.e-]*[1-9]' '$work/two-separate/train_log.jsonl'"
check "the 4-process job placed both roles and served GRPO's reference each step" \
  "grep -q 'the reference runs on world ranks 2..2' '$work/two-separate.out' && grep -q 'the reward models run on world ranks 3..3' '$work/two-separate.out' && grep -q 'stage grpo: the reference ranks answer the per-token log-prob requests' '$work/two-separate.out'"

# Killed mid-GRPO (after its step-10 checkpoint: DPO's 4 steps + 6) and resumed.
job resume separate 1 yes "" 10 0.04 >"$work/resume.yaml"
kill_at_step 4 "$work/resume.yaml" "$work/resume/train_log.jsonl" 12
check "killed mid-GRPO after a checkpoint ($(ls "$work/resume/checkpoints" 2>/dev/null | tr '\n' ' '))" \
  "[[ -d '$work/resume/checkpoints/step-00000010' && ! -d '$work/resume/final' ]]"
check "the checkpoint holds GRPO's reference (the policy as the stage started)" \
  "[[ -f '$work/resume/checkpoints/step-00000010/reference/model.safetensors' ]]"
mpi 4 "$ALN" train "$work/resume.yaml" --resume >"$work/resume2.out" 2>&1; rc=$?
check "resumed (rc $rc): $(tail -1 "$work/resume2.out")" "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000010' '$work/resume2.out'"
check "the resumed run ends where the uninterrupted one does (parameters, losses, scores)" "same two-separate resume"

# The layout check and a reward model that cannot be loaded.
job wrong-np separate 1 yes >"$work/wrong-np.yaml"
mpi 3 "$ALN" train "$work/wrong-np.yaml" >"$work/wrong-np.out" 2>&1; rc=$?
check "3 processes for policy 2 + reference 1 + reward 1: says 4 would fit (rc $rc)" \
  "[[ $rc -eq 2 ]] && grep -q 'needs 2 policy + 1 reference + 1 reward process(es) (parallel.reference.data_parallel, parallel.reward.data_parallel) = 4' '$work/wrong-np.out'"
job bad-rm separate 1 "" "$work/no-such-model" >"$work/bad-rm.yaml"
mpi 3 "$ALN" train "$work/bad-rm.yaml" >"$work/bad-rm.out" 2>&1; rc=$?
check "a reward model that does not load: the policy's error names it and the reward rank (rc $rc)" \
  "[[ $rc -ne 0 ]] && grep -q 'request \"load\" to rank 2 failed there: .*reward_models: judge: .*no-such-model/config.json' '$work/bad-rm.out'"

# Faults. While the policy trains the reward ranks answer a few requests per step.
#  - KILL: 2 policy ranks, 2 reward ranks (one per policy rank); the job ends naming rank 2.
#  - STOP: 1 policy rank and 1 reward rank, so the only rank that waits is the one whose score request
#    goes to the frozen rank: with a second policy rank, that rank (answered by its own reward rank)
#    can reach the gradient all-reduce and time out there first (both wait timeout_s), naming rank 0:
#    it did once in a loaded full ctest run, after training steps got faster.
for signal in KILL STOP; do
  if [[ $signal == KILL ]]; then np=4 reward_ranks=2 victim_rank=2 policy_ranks=2; else np=2 reward_ranks=1 victim_rank=1 policy_ranks=1; fi
  # A request waits at most timeout_s (10 s), before rank 0's heartbeat monitor would call the frozen
  # rank silent (20 s).
  job fault-$signal separate $reward_ranks "" "" 100000 |
    sed -e "s/^metrics: .*/metrics: {port: 0, progress_bar: false}/" \
        -e "s/policy: {data_parallel: 2}/policy: {data_parallel: $policy_ranks}/" >"$work/fault-$signal.yaml"
  before=""
  [[ $signal == STOP ]] && before="scrape_until '$work/fault-$signal.out' '^aln_reward_requests_total{.*method=\"score\".*rank=\"$victim_rank\"'"
  signal_rank $np "$work/fault-$signal.yaml" "$work/fault-$signal.out" $victim_rank $signal "$work/fault-$signal/train_log.jsonl" 3 "$before"
  check "$signal: found the reward rank while the policy trains" "[[ -n '$victim' ]]"
  check "$signal of the reward rank ends the job non-zero within 60 s (rc $fault_rc, ${fault_took}s)" \
    "[[ $fault_rc -ne 0 && $fault_took -le 60 ]]"
  if [[ $signal == STOP ]]; then
    check "rank 0's /metrics carries the reward rank's request counter (role reward)" \
      "grep -q '^aln_reward_requests_total{.*method=\"score\".*rank=\"$victim_rank\",role=\"reward\"' '$work/fault.metrics'"
    check "STOP: the score request times out naming the reward rank: $(grep -m1 "reward rank $victim_rank" "$work/fault-$signal.out")" \
      "grep -q 'reward model judge on reward rank $victim_rank: request \"score\" to rank $victim_rank: ' '$work/fault-$signal.out' && grep -q 'last collectives of this rank (oldest first): ' '$work/fault-$signal.out'"
  else
    check "KILL: the failure names rank 2: $(grep -m1 -i 'rank 2' "$work/fault-$signal.out")" "grep -qi 'rank 2' '$work/fault-$signal.out'"
  fi
done

summary
