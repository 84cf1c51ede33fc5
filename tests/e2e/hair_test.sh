#!/usr/bin/env bash
# HAIR end to end (small settings): SFT on XSTest prompts with short answers written here, then HAIR
# on StrongREJECT's harmful prompts (six harm categories, 20 prompts each after balancing) with the
# built-in Chain-of-Draft demonstrations:
#  - examples/hair.yaml validates;
#  - one process: exit 0; HAIR's metrics logged (hardness alpha^D / alpha^M, similarity, IRL loss and
#    accuracy, the shadow reward of every category); the IRL loss falls (the shadow reward models
#    learn to rank the demonstrations above the policy's samples); one shadow reward model per
#    category exported, and transformers loads it as *ForSequenceClassification with no missing key;
#  - 3 ranks under mpirun (deterministic) log the same losses and IRL losses as one process
#    accumulating the three micro-batches, bit for bit (the shadow models' gradients are summed over
#    ranks in the engine's order);
#  - killed mid-stage and resumed: the same losses bit for bit, byte-identical final policy and
#    shadow reward models (their weights and AdamW state travel in the checkpoint);
#  - a running job exports HAIR's metrics on its /metrics endpoint;
#  - a missing demonstrations file is a clear error naming the key.
#  - the rollout dump holds every sample with its shadow reward, byte-identical after a resume.
# Usage: hair_test.sh ALN MPIEXEC PYTHON
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PYTHON="${3:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh

short_answers "$work/short.jsonl"

job() {  # job OUT MICRO ACCUM DP [HAIR_EXTRA] [SFT_STEPS]
  job_head hair-test "$1" 9
  echo "stages:"
  sft_stage "${6:-8}" "$3"
  cat <<YAML
  - name: hair
    trainer: {hair: {group_size: 4, max_new_tokens: 12, irl_lr: 3e-3, per_category: 20${5:-}}}
    data:
      train: [{path: examples/data/strongreject/strongreject_dataset.csv, format: prompts}]
      max_prompt_length: 40
      max_response_length: 64
    optimizer: {lr: 1e-2, max_steps: 12, micro_batch_size: $2, gradient_accumulation: $3}  # 72 of 120 prompts: one epoch
eval: {max_examples: 4}
rollouts: {dump: true}
YAML
  job_tail $4 4
}

check "examples/hair.yaml validates" '"$ALN" train examples/hair.yaml --dry-run >/dev/null 2>&1'
job "$work/bad" 2 1 1 ", demonstrations: $work/none.jsonl" 0 | sed 's/max_steps: 0/max_steps: 1/' >"$work/bad.yaml"
"$ALN" train "$work/bad.yaml" >/dev/null 2>"$work/bad.err"; rc=$?
check "a missing demonstrations file is refused naming the key (rc $rc: $(tail -1 "$work/bad.err"))" \
  '[[ $rc -ne 0 ]] && grep -q "none.jsonl: cannot open the demonstrations file (trainer.hair.demonstrations)" "$work/bad.err"'

job "$work/one" 2 3 1 >"$work/one.yaml"
"$ALN" train "$work/one.yaml" >"$work/one.out" 2>"$work/one.err"; rc=$?
check "one process exits 0 (rc $rc): $(tail -2 "$work/one.err")" '[[ $rc -eq 0 ]]'
check "HAIR metrics are logged for every step, with a shadow reward per category" \
  'python3 - "$work/one/train_log.jsonl" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["stage"] == "hair"]
assert len(rows) == 12, len(rows)
for r in rows:
    m = r["metrics"]
    assert all(k in m for k in ("alpha_d_mean", "alpha_d_min", "alpha_d_max", "alpha_m_mean", "outlier_share",
                                "similarity_mean", "irl_loss", "irl_accuracy", "reward_gap_mean", "kl")), m
    assert 0 < m["alpha_d_min"] <= m["alpha_d_max"] < 2, m
cats = {k for r in rows for k in r["metrics"] if k.startswith("reward/")}
assert len(cats) == 6, cats
PY'
check "the IRL loss falls (mean of the last 4 steps below the first 4)" \
  'python3 - "$work/one/train_log.jsonl" <<PY
import json, sys
r = [json.loads(l)["metrics"]["irl_loss"] for l in open(sys.argv[1]) if json.loads(l)["stage"] == "hair"]
print("  irl_loss first/last:", sum(r[:4]) / 4, sum(r[-4:]) / 4)
sys.exit(0 if sum(r[-4:]) < sum(r[:4]) else 1)
PY'
check "six shadow reward models exported" '[[ $(ls "$work/one/hair/shadow_rewards" | wc -l) -eq 6 ]]'
check "transformers loads an exported shadow reward model as LlamaForSequenceClassification" \
  '"$PYTHON" - "$work/one/hair/shadow_rewards/violence" <<PY
import sys
from transformers import AutoModelForSequenceClassification
m, info = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], output_loading_info=True)
assert type(m).__name__ == "LlamaForSequenceClassification", type(m)
assert not info["missing_keys"] and not info["unexpected_keys"], info
assert m.score.weight.abs().sum() > 0
PY'

scrape_while_running "$work/one.yaml" "$work/scrape" 'aln_train_metric\{.*name="alpha_d_mean".*trainer="hair"'
check "a running job exports HAIR's metrics on /metrics ($(echo "$scraped" | head -1 | cut -c1-120))" '[[ -n "$scraped" ]]'
job "$work/dp3" 2 1 3 >"$work/dp3.yaml"
mpi 3 "$ALN" train "$work/dp3.yaml" >"$work/dp3.out" 2>"$work/dp3.err"; rc=$?
check "mpirun -np 3 exits 0 (rc $rc): $(tail -2 "$work/dp3.err")" '[[ $rc -eq 0 ]]'
losses "$work/one/train_log.jsonl" irl_loss >"$work/one.losses"
losses "$work/dp3/train_log.jsonl" irl_loss >"$work/dp3.losses"
check "3 ranks (deterministic) log the same 20 losses, grad norms and IRL losses as one process" \
  '[[ $(wc -l <"$work/one.losses") -eq 20 ]] && diff "$work/one.losses" "$work/dp3.losses" >&2'
check "3 ranks export the same shadow reward models" \
  'cmp -s "$work/one/hair/shadow_rewards/violence/model.safetensors" "$work/dp3/hair/shadow_rewards/violence/model.safetensors"'

job "$work/kill" 2 3 1 >"$work/kill.yaml"
run_and_kill "$work/kill.yaml" "$work/kill" 14
check "killed mid-stage (after $killed_at steps)" '[[ $killed_at -ge 14 && $killed_at -lt 20 ]]'
"$ALN" train "$work/kill.yaml" --resume >/dev/null 2>"$work/kill2.err"; rc=$?
check "resumed run exits 0 (rc $rc): $(tail -2 "$work/kill2.err")" '[[ $rc -eq 0 ]]'
losses "$work/kill/train_log.jsonl" irl_loss >"$work/kill.losses"
check "resumed losses and IRL losses equal the uninterrupted run's, bit for bit" \
  'diff "$work/one.losses" "$work/kill.losses" >&2'
check "byte-identical final policy" 'cmp -s "$work/one/final/model.safetensors" "$work/kill/final/model.safetensors"'
check "byte-identical shadow reward models" \
  '(for d in "$work"/one/hair/shadow_rewards/*; do cmp -s "$d/model.safetensors" "$work/kill/hair/shadow_rewards/$(basename "$d")/model.safetensors" || exit 1; done)'
check "rollout records: the shadow reward per sample; identical after the kill and resume" \
  'cmp -s "$work/one/rollouts/hair/rank0.jsonl" "$work/kill/rollouts/hair/rank0.jsonl" && python3 - "$work/one/rollouts/hair/rank0.jsonl" <<PY
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert len(recs) == 12 * 6 * 4 and all(r["reward"] == r["rewards"]["shadow"] for r in recs), len(recs)
PY'
summary
