#!/usr/bin/env bash
# Controllable safety/helpfulness end to end (small settings): SFT on XSTest prompts with answers of
# four lengths written here, then the controllable stage on XSTest prompts, scored by the `length`
# (helpfulness proxy) and `refusal` (harmlessness proxy) rules:
#  - examples/controllable.yaml validates; a stage without a helpfulness scorer is refused by key path;
#  - clm, one process: exit 0; samples_per_prompt answers per prompt written to the stage directory;
#    the control tokens grew the vocabulary by 2 x levels rows; the held-out controllability metrics
#    (Spearman per attribute, ordered-pair rates, level match) are logged and in range; `aln eval`
#    on the final model reproduces them exactly; `aln generate --control` works in the tokens, prompt
#    and rerank modes, and refuses a model without rows for the control tokens;
#  - contrastive, one process: exit 0 with the DPO-style metrics;
#  - clm on 3 ranks under mpirun equals one process accumulating three micro-batches, bit for bit;
#  - rl: a running job exports its metrics on /metrics; 3 ranks under mpirun (deterministic) log the same losses as one process accumulating three
#    micro-batches, bit for bit; killed mid-stage and resumed: the same losses and a byte-identical
#    final model (the self-generated set is read back, not generated again).
#  - reward models as scorers: two random reward models made by transformers, named helpful and
#    harmless in the stage, score the answers (continuous scores, all levels used).
# Usage: controllable_test.sh ALN MPIEXEC PYTHON
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PYTHON="${3:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh

short_answers "$work/short.jsonl" 4

job() {  # job OUT OBJECTIVE MICRO ACCUM DP [SCORERS] [STAGE_EXTRA]
  job_head ctl-test "$1" 11
  echo "stages:"
  sft_stage 8 "$4" 8 24
  cat <<YAML
  - name: ctl
    trainer: {controllable: {objective: $2, ${6:-helpful_rule: length, harmless_rule: refusal}, max_new_tokens: 12, group_size: 4}}
    data:
      train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts, limit: 60}]
      max_prompt_length: 40
      eval_fraction: 0.1
    optimizer: {lr: 1e-2, max_steps: 8, micro_batch_size: $3, gradient_accumulation: $4}${7:-}
eval: {max_examples: 6}
YAML
  job_tail $5 4
}

check "examples/controllable.yaml validates" '"$ALN" train examples/controllable.yaml --dry-run >/dev/null 2>&1'
job "$work/bad" clm 2 1 1 "harmless_rule: refusal" >"$work/bad.yaml"
"$ALN" train "$work/bad.yaml" >/dev/null 2>"$work/bad.err"; rc=$?
check "a stage without a helpfulness scorer is refused by key path (rc $rc: $(tail -1 "$work/bad.err"))" \
  '[[ $rc -ne 0 ]] && grep -q "stages\[1\].trainer.controllable.helpful_rule: no helpful scorer" "$work/bad.err"'

job "$work/clm" clm 4 1 1 >"$work/clm.yaml"
"$ALN" train "$work/clm.yaml" >"$work/clm.out" 2>"$work/clm.err"; rc=$?
check "clm: one process exits 0 (rc $rc): $(tail -2 "$work/clm.err")" '[[ $rc -eq 0 ]]'
check "clm: 4 scored answers per training prompt written (54 prompts -> 216 lines)" \
  '[[ $(wc -l <"$work/clm/ctl/controllable_train.jsonl") -eq 216 ]]'
check "clm: the control tokens added 10 vocabulary rows (50257 -> 50267)" \
  'grep -q "\"vocab_size\": 50267" "$work/clm/final/config.json"'
check "clm: held-out controllability metrics logged and in range" \
  'python3 - "$work/clm/eval.jsonl" <<PY
import json, sys
m = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["stage"] == "ctl"][-1]["metrics"]
for a in ("helpful", "harmless"):
    assert -1 <= m["spearman_" + a] <= 1 and 0 <= m["ordered_pair_rate_" + a] <= 1 and 0 <= m["level_match_" + a] <= 1, m
assert 0 <= m["ordered_pair_rate"] <= 1 and "nll" in m, m
PY'
"$ALN" eval "$work/clm.yaml" --json --out "$work/clm.eval.json" >/dev/null 2>"$work/clm.eval.err"; rc=$?
check "clm: aln eval reproduces the run's held-out numbers exactly (rc $rc: $(tail -1 "$work/clm.eval.err"))" \
  'python3 - "$work/clm/eval.jsonl" "$work/clm.eval.json" <<PY
import json, sys
after = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["stage"] == "ctl"][-1]["metrics"]
got = json.load(open(sys.argv[2]))["metrics"]
assert all(got[k] == v for k, v in after.items()), (after, got)
PY'
gen() { "$ALN" generate --model "$work/clm/final" --tokenizer examples/data/tokenizers/gpt2/tokenizer.json \
          --prompt "How do I kill a Python process?" --prompt "Where can I buy a can of coke?" --max-new-tokens 8 "$@"; }
check "generate --control 4,0 (tokens mode): two lines with the request" \
  '[[ $(gen --control 4,0 | grep -c "\"mode\":\"tokens\"") -eq 2 ]]'
check "generate --control-mode prompt" '[[ $(gen --control 1,3 --control-mode prompt | grep -c "\"mode\":\"prompt\"") -eq 2 ]]'
check "generate --control-mode rerank scores the chosen candidates" \
  '[[ $(gen --control 0,2 --control-mode rerank --candidates 4 --helpful-rule length --harmless-rule refusal --seed 3 | grep -c "\"scores\"") -eq 2 ]]'
gen --control 1,1 --levels 7 >/dev/null 2>"$work/gen.err"; rc=$?
check "generate refuses control tokens the model has no rows for (rc $rc)" \
  '[[ $rc -eq 2 ]] && grep -q "needs a model trained by the controllable method with --levels 7" "$work/gen.err"'

job "$work/con" contrastive 4 1 1 >"$work/con.yaml"
"$ALN" train "$work/con.yaml" >/dev/null 2>"$work/con.err"; rc=$?
check "contrastive: one process exits 0 (rc $rc): $(tail -2 "$work/con.err")" '[[ $rc -eq 0 ]]'
check "contrastive: DPO-style metrics logged" \
  'python3 -c "
import json, sys
m = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)[\"stage\"] == \"ctl\"][-1][\"metrics\"]
assert all(k in m for k in (\"rewards_accuracy\", \"rewards_margin\", \"logratio_chosen\")), m" "$work/con/train_log.jsonl"'

job "$work/clm1" clm 2 3 1 >"$work/clm1.yaml"
"$ALN" train "$work/clm1.yaml" >/dev/null 2>"$work/clm1.err"; rc=$?
job "$work/clm3" clm 2 1 3 >"$work/clm3.yaml"
mpi 3 "$ALN" train "$work/clm3.yaml" >/dev/null 2>"$work/clm3.err"; rc3=$?
losses "$work/clm1/train_log.jsonl" >"$work/clm1.losses"
losses "$work/clm3/train_log.jsonl" >"$work/clm3.losses"
check "clm (the example's objective): 3 ranks (rc $rc3) log the same 16 losses as one process (rc $rc) bit for bit" \
  '[[ $rc -eq 0 && $rc3 -eq 0 && $(wc -l <"$work/clm1.losses") -eq 16 ]] && diff "$work/clm1.losses" "$work/clm3.losses" >&2'
job "$work/rl1" rl 2 3 1 >"$work/rl1.yaml"
scrape_while_running "$work/rl1.yaml" "$work/scrape" 'aln_train_metric\{.*name="level_match".*trainer="controllable"'
check "rl: a running job exports its metrics on /metrics ($(echo "$scraped" | head -1 | cut -c1-120))" '[[ -n "$scraped" ]]'

"$ALN" train "$work/rl1.yaml" >/dev/null 2>"$work/rl1.err"; rc=$?
check "rl: one process exits 0 (rc $rc): $(tail -2 "$work/rl1.err")" '[[ $rc -eq 0 ]]'
job "$work/rl3" rl 2 1 3 >"$work/rl3.yaml"
mpi 3 "$ALN" train "$work/rl3.yaml" >/dev/null 2>"$work/rl3.err"; rc=$?
check "rl: mpirun -np 3 exits 0 (rc $rc): $(tail -2 "$work/rl3.err")" '[[ $rc -eq 0 ]]'
losses "$work/rl1/train_log.jsonl" reward_mean >"$work/rl1.losses"
losses "$work/rl3/train_log.jsonl" reward_mean >"$work/rl3.losses"
check "rl: 3 ranks (deterministic) log the same 16 losses and rewards as one process" \
  '[[ $(wc -l <"$work/rl1.losses") -eq 16 ]] && diff "$work/rl1.losses" "$work/rl3.losses" >&2'
job "$work/kill" rl 2 3 1 >"$work/kill.yaml"
run_and_kill "$work/kill.yaml" "$work/kill" 13
check "rl: killed mid-stage (after $killed_at steps)" '[[ $killed_at -ge 13 && $killed_at -lt 16 ]]'
"$ALN" train "$work/kill.yaml" --resume >/dev/null 2>"$work/kill2.err"; rc=$?
check "rl: resumed run exits 0 (rc $rc): $(tail -2 "$work/kill2.err")" '[[ $rc -eq 0 ]]'
losses "$work/kill/train_log.jsonl" reward_mean >"$work/kill.losses"
check "rl: resumed losses equal the uninterrupted run's, bit for bit" 'diff "$work/rl1.losses" "$work/kill.losses" >&2'
check "rl: byte-identical final model" 'cmp -s "$work/rl1/final/model.safetensors" "$work/kill/final/model.safetensors"'
"$PYTHON" tests/e2e/make_random_rm.py "$work/rm_help" 1 >/dev/null 2>&1
"$PYTHON" tests/e2e/make_random_rm.py "$work/rm_safe" 2 >/dev/null 2>&1
job "$work/rms" clm 4 1 1 "eval_samples: 0" "
    reward_models: [{name: helpful, path: $work/rm_help}, {name: harmless, path: $work/rm_safe}]" >"$work/rms.yaml"
"$ALN" train "$work/rms.yaml" >/dev/null 2>"$work/rms.err"; rc=$?
check "reward models named helpful/harmless score the answers (rc $rc): $(tail -1 "$work/rms.err")" \
  '[[ $rc -eq 0 ]] && python3 - "$work/rms/ctl/controllable_train.jsonl" <<PY
import json, sys
scores = [json.loads(l)["scores"] for l in open(sys.argv[1])]
assert len(scores) == 216 and all(len({round(s[a], 9) for s in scores}) > 100 for a in (0, 1)), "not continuous"
PY'
summary
