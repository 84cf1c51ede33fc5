#!/usr/bin/env bash
# GRPO end to end with on-policy rollouts (small settings): SFT on XSTest prompts with two short
# answers (written here, so a tiny model learns to end its answers within a few steps), then GRPO on
# the XSTest prompts with the BREVITY rule reward (1 - tokens / max_new_tokens):
#  - examples/grpo.yaml validates;
#  - one process: exit 0, rollout metrics logged (reward_mean, completion_length, kl, policy_version
#    equal to the step, staleness 0), the mean reward of the last steps above the first steps';
#  - 3 ranks under mpirun (deterministic) log the same losses as one process accumulating the
#    three micro-batches, bit for bit (sampling seeds come from the seed, step and prompts);
#  - killed mid-stage and resumed: the same losses bit for bit, byte-identical final model;
#  - bounded staleness (max_staleness 2): the sampling snapshot is refreshed every 3 steps
#    (staleness 0, 1, 2, 0, ...; policy_version = step - staleness), the losses differ from on-policy
#    ones (the importance ratio is no longer 1), and a run killed while its snapshot is stale
#    resumes bit for bit (the snapshot is in the checkpoint).
#  - a reward model (a random one made by transformers) as the only reward: its scores are logged.
#  - rollouts: {dump: true}: every sampled response is a record in rollouts/grpo/rank<R>.jsonl (none
#    for the SFT stage) whose rewards average to the logged reward_mean; the 3 ranks' files hold
#    exactly one process's records (same seeds, tokens, sampling log-probs and rewards, bit for bit);
#    the killed-and-resumed run's file is byte-identical to the uninterrupted one's (redone steps
#    dropped); stale records carry the snapshot's version; `aln data inspect` summarises a dump.
# Usage: grpo_test.sh ALN MPIEXEC PYTHON
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PYTHON="${3:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh

short_answers "$work/short.jsonl"

job() {  # job OUT MICRO ACCUM DP [STALENESS] [RULE_OPTION] [STAGE_EXTRA]
  job_head grpo-test "$1" 5
  echo "stages:"
  sft_stage 16 "$3"  # 16 steps stay within one epoch: 3 ranks would drop a different remainder at its end
  cat <<YAML
  - name: grpo
    trainer: {grpo: {group_size: 4, beta: 0.04, max_new_tokens: 16${6-, reward_rule: brevity}, max_staleness: ${5:-0}}}${7:-}
    data:
      train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts}]
      max_prompt_length: 32
    optimizer: {lr: 1e-2, max_steps: 16, micro_batch_size: $2, gradient_accumulation: $3}
eval: {max_examples: 4}
rollouts: {dump: true}
YAML
  job_tail $4 4
}

check "examples/grpo.yaml validates" '"$ALN" train examples/grpo.yaml --dry-run >/dev/null 2>&1'

job "$work/one" 2 3 1 >"$work/one.yaml"
"$ALN" train "$work/one.yaml" >"$work/one.out" 2>"$work/one.err"; rc=$?
check "one process exits 0 (rc $rc): $(tail -2 "$work/one.err")" '[[ $rc -eq 0 ]]'
check "rollout metrics are logged" \
  'python3 - "$work/one/train_log.jsonl" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["stage"] == "grpo"]
m = rows[-1]["metrics"]
assert all(k in m for k in ("reward_mean", "reward_rule", "completion_length", "kl", "clip_ratio_low")), m
assert all(r["metrics"]["policy_version"] == r["step"] - 1 and r["metrics"]["rollout_staleness"] == 0 for r in rows)
PY'
check "the brevity reward rises (mean of the last 4 steps above the first 4)" \
  'python3 - "$work/one/train_log.jsonl" <<PY
import json, sys
r = [json.loads(l)["metrics"]["reward_mean"] for l in open(sys.argv[1]) if json.loads(l)["stage"] == "grpo"]
print("  reward first/last:", sum(r[:4]) / 4, sum(r[-4:]) / 4)
sys.exit(0 if sum(r[-4:]) > sum(r[:4]) else 1)
PY'
check "one record per sample, rewards averaging to reward_mean, version = step - 1, none for SFT" \
  'python3 - "$work/one" <<PY
import json, os, sys
out = sys.argv[1]
assert sorted(os.listdir(out + "/rollouts")) == ["grpo"], os.listdir(out + "/rollouts")
recs = [json.loads(l) for l in open(out + "/rollouts/grpo/rank0.jsonl")]
log = {r["step"]: r for r in map(json.loads, open(out + "/train_log.jsonl")) if r["stage"] == "grpo"}
assert len(recs) == 16 * 6 * 4, len(recs)
for step, row in log.items():
    mine = [r for r in recs if r["step"] == step]
    assert len(mine) == 24 and all(r["global_step"] == row["global_step"] for r in mine)
    assert all(r["policy_version"] == step - 1 for r in mine)
    mean = sum(r["reward"] for r in mine) / len(mine)
    assert abs(mean - row["metrics"]["reward_mean"]) < 1e-9, (step, mean, row["metrics"]["reward_mean"])
    assert all(abs(r["reward"] - r["rewards"]["reward_rule"]) < 1e-12 for r in mine)
for r in recs:
    assert len(r["sampling_logprobs"]) == len(r["response_ids"]) and all(x <= 0 for x in r["sampling_logprobs"])
    assert r["terminated"] or len(r["response_ids"]) == 16, r  # sampling stops at the end token or the cap
assert len({r["response_ids"][-1] for r in recs if r["terminated"]}) == 1
PY'
"$ALN" data inspect "$work/one/rollouts" --show 2 >"$work/inspect.out" 2>&1; rc=$?
check "aln data inspect summarises the dump (rc $rc): $(head -2 "$work/inspect.out" | tail -1)" \
  '[[ $rc -eq 0 ]] && grep -q "384 rollout records" "$work/inspect.out" && grep -q "staleness.*0: 384" "$work/inspect.out" && grep -q "response:" "$work/inspect.out"'
job "$work/dp3" 2 1 3 >"$work/dp3.yaml"
mpi 3 "$ALN" train "$work/dp3.yaml" >"$work/dp3.out" 2>"$work/dp3.err"; rc=$?
check "mpirun -np 3 exits 0 (rc $rc): $(tail -2 "$work/dp3.err")" '[[ $rc -eq 0 ]]'
losses "$work/one/train_log.jsonl" reward_mean >"$work/one.losses"
losses "$work/dp3/train_log.jsonl" reward_mean >"$work/dp3.losses"
check "3 ranks (deterministic) log the same 32 losses, grad norms and rewards as one process" \
  '[[ $(wc -l <"$work/one.losses") -eq 32 ]] && diff -q "$work/one.losses" "$work/dp3.losses" >/dev/null'
check "the 3 ranks' rollout files hold one process's records, bit for bit" \
  'python3 - "$work/one" "$work/dp3" <<PY
import json, sys
def records(paths):
    out = []
    for p in paths:
        for line in open(p):
            r = json.loads(line)
            r.pop("rank")
            out.append(json.dumps(r, sort_keys=True))
    return sorted(out)
one = records([sys.argv[1] + "/rollouts/grpo/rank0.jsonl"])
dp3 = records([sys.argv[2] + "/rollouts/grpo/rank%d.jsonl" % i for i in range(3)])
assert len(one) == 384 and one == dp3, (len(one), len(dp3))
PY'
job "$work/kill" 2 3 1 >"$work/kill.yaml"
run_and_kill "$work/kill.yaml" "$work/kill" 25
check "killed mid-stage (after $killed_at steps)" '[[ $killed_at -ge 25 && $killed_at -lt 32 ]]'
"$ALN" train "$work/kill.yaml" --resume >/dev/null 2>"$work/kill2.err"; rc=$?
check "resumed run exits 0 (rc $rc): $(tail -2 "$work/kill2.err")" '[[ $rc -eq 0 ]]'
losses "$work/kill/train_log.jsonl" reward_mean >"$work/kill.losses"
check "resumed losses and rewards equal the uninterrupted run's, bit for bit" \
  'diff -q "$work/one.losses" "$work/kill.losses" >/dev/null'
check "byte-identical final model" 'cmp -s "$work/one/final/model.safetensors" "$work/kill/final/model.safetensors"'
check "byte-identical rollout dump after the kill and resume" \
  'cmp -s "$work/one/rollouts/grpo/rank0.jsonl" "$work/kill/rollouts/grpo/rank0.jsonl"'
job "$work/stale" 2 3 1 2 >"$work/stale.yaml"
"$ALN" train "$work/stale.yaml" >/dev/null 2>"$work/stale.err"; rc=$?
check "max_staleness 2 exits 0 (rc $rc): $(tail -2 "$work/stale.err")" '[[ $rc -eq 0 ]]'
check "staleness cycles 0, 1, 2 and policy_version = step - staleness" \
  'python3 - "$work/stale/train_log.jsonl" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["stage"] == "grpo"]
st = [r["metrics"]["rollout_staleness"] for r in rows]
assert st == [i % 3 for i in range(16)], st
assert all(r["metrics"]["policy_version"] == r["step"] - 1 - r["metrics"]["rollout_staleness"] for r in rows)
PY'
check "stale records carry the sampling snapshot's version" \
  'python3 - "$work/stale/rollouts/grpo/rank0.jsonl" <<PY
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert len(recs) == 384 and all(r["policy_version"] == r["step"] - 1 - (r["step"] - 1) % 3 for r in recs)
PY'
losses "$work/stale/train_log.jsonl" reward_mean >"$work/stale.losses"
check "stale rollouts change the losses (importance ratios away from 1)" \
  '! diff -q <(grep " grpo " "$work/one.losses") <(grep " grpo " "$work/stale.losses") >/dev/null'
job "$work/stalekill" 2 3 1 2 >"$work/stalekill.yaml"
run_and_kill "$work/stalekill.yaml" "$work/stalekill" 22
"$ALN" train "$work/stalekill.yaml" --resume >/dev/null 2>"$work/stalekill2.err"; rc=$?
check "stale run killed after $killed_at steps resumes (rc $rc): $(tail -1 "$work/stalekill2.err")" '[[ $rc -eq 0 ]]'
losses "$work/stalekill/train_log.jsonl" reward_mean >"$work/stalekill.losses"
check "resumed stale run: the same losses bit for bit (the sampling snapshot was restored)" \
  'diff "$work/stale.losses" "$work/stalekill.losses" >&2'
"$PYTHON" tests/e2e/make_random_rm.py "$work/rm" >/dev/null 2>&1
job "$work/rm_run" 2 1 1 0 "" "
    reward_models: [{name: judge, path: $work/rm}]" >"$work/rm_run.yaml"
"$ALN" train "$work/rm_run.yaml" >/dev/null 2>"$work/rm_run.err"; rc=$?
check "a reward model as the only reward (rc $rc): $(tail -1 "$work/rm_run.err")" \
  '[[ $rc -eq 0 ]] && python3 - "$work/rm_run/train_log.jsonl" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["stage"] == "grpo"]
assert all("reward_model_0" in r["metrics"] and "reward_rule" not in r["metrics"] for r in rows)
assert all(r["metrics"]["reward_std"] > 0 for r in rows), [r["metrics"]["reward_std"] for r in rows]
recs = [json.loads(l) for l in open(sys.argv[1].replace("train_log.jsonl", "rollouts/grpo/rank0.jsonl"))]
assert recs and all(list(r["rewards"]) == ["reward_model_0"] and r["reward"] == r["rewards"]["reward_model_0"] for r in recs)
PY'
summary
