#!/usr/bin/env bash
# PT-ALIGN end to end (small settings): SFT, then PT-ALIGN on the shipped seed pairs expanded by the
# policy's own generation:
#  - examples/ptalign.yaml validates;
#  - one process: exit 0; the generated pairs are written (text and ids) and counted; the stage
#    logs its metrics; the held-out positive-response loss falls and the positive-vs-toxic preference does not fall;
#  - 3 ranks under mpirun (deterministic): every rank generates the same pairs; losses equal one
#    process accumulating three micro-batches, bit for bit;
#  - killed mid-stage and resumed: the pairs are read back, not regenerated; losses bit for bit,
#    byte-identical final model;
#  - lexicon weights work; span weights (the seeds' rejected_spans) work;
#  - the reward-margin filter drops generated pairs a reward model (a random one made by transformers)
#    ranks the wrong way, and is refused without a reward model.
# Usage: ptalign_test.sh ALN MPIEXEC PYTHON
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PYTHON="${3:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh

job() {  # job OUT MICRO ACCUM DP [WEIGHTS] [EXTRA_OPTIONS] [STAGE_EXTRA]
  job_head ptalign-test "$1" 9
  cat <<YAML
stages:
  - name: sft
    trainer: {sft: {}}
    data:
      train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}]
      max_prompt_length: 32
      max_response_length: 16
    optimizer: {lr: 3e-3, max_steps: 4, micro_batch_size: 4, gradient_accumulation: $3}
  - name: ptalign
    trainer: {ptalign: {token_weights: ${5:-not_in_positive}, lexicon_path: examples/ptalign/lexicon.txt,
              num_instructions: 6, max_new_tokens: 10, refinement_rounds: 1, min_response_tokens: 1${6:-}}}${7:-}
    data:
      train: [{path: examples/ptalign/seeds.jsonl, format: preference}]
      max_prompt_length: 40
      max_response_length: 24
      eval_fraction: 0.2
    optimizer: {lr: 5e-3, max_steps: 8, micro_batch_size: $2, gradient_accumulation: $3}  # within one epoch: 3 ranks drop a different remainder at its end
YAML
  job_tail $4 2
}

check "examples/ptalign.yaml validates" '"$ALN" train examples/ptalign.yaml --dry-run >/dev/null 2>&1'
job "$work/one" 1 3 1 >"$work/one.yaml"
"$ALN" train "$work/one.yaml" >"$work/one.out" 2>"$work/one.err"; rc=$?
check "one process exits 0 (rc $rc): $(tail -2 "$work/one.err")" '[[ $rc -eq 0 ]]'
pairs="$work/one/ptalign/ptalign_pairs.jsonl"
check "self-generated pairs written with text and ids ($(wc -l <"$pairs" 2>/dev/null) pairs)" \
  '[[ -s "$pairs" ]] && head -1 "$pairs" | grep -q "\"rejected_ids\""'
check "the stage logs likelihood, unlikelihood and the toxic-token probability" \
  'tail -1 "$work/one/train_log.jsonl" | grep -q "\"unlikelihood_loss\"" && tail -1 "$work/one/train_log.jsonl" | grep -q "toxic_token_probability"'
# The held-out set is 6 pairs, so preference accuracy moves in steps of 1/6 and may already start at
# 5/6: the check is that it does not fall while the held-out likelihood loss of the positive
# responses falls (a continuous measure of the same learning).
check "held-out: positive-response loss falls, preference for positive over toxic does not fall" \
  'python3 - "$work/one/eval.jsonl" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["stage"] == "ptalign"]
before = next(r for r in rows if r["when"] == "before")["metrics"]
after = next(r for r in rows if r["when"] == "after")["metrics"]
print("  held-out preference accuracy before/after:", before["preference_accuracy"], after["preference_accuracy"],
      "likelihood loss:", before["likelihood_loss"], after["likelihood_loss"])
ok = after["preference_accuracy"] >= before["preference_accuracy"] and after["likelihood_loss"] < before["likelihood_loss"]
sys.exit(0 if ok else 1)
PY'
job "$work/dp3" 1 1 3 >"$work/dp3.yaml"
mpi 3 "$ALN" train "$work/dp3.yaml" >"$work/dp3.out" 2>"$work/dp3.err"; rc=$?
check "mpirun -np 3 exits 0 (rc $rc): $(tail -2 "$work/dp3.err")" '[[ $rc -eq 0 ]]'
check "3 ranks generated the same pairs as one process" 'cmp -s "$pairs" "$work/dp3/ptalign/ptalign_pairs.jsonl"'
losses "$work/one/train_log.jsonl" >"$work/one.losses"
losses "$work/dp3/train_log.jsonl" >"$work/dp3.losses"
check "3 ranks (deterministic) log the same 12 losses as one process" \
  '[[ $(wc -l <"$work/one.losses") -eq 12 ]] && diff -q "$work/one.losses" "$work/dp3.losses" >/dev/null'
job "$work/kill" 1 3 1 >"$work/kill.yaml"
run_and_kill "$work/kill.yaml" "$work/kill" 9
check "killed mid-stage (after $killed_at steps)" '[[ $killed_at -ge 9 && $killed_at -lt 12 ]]'
"$ALN" train "$work/kill.yaml" --resume >/dev/null 2>"$work/kill2.err"; rc=$?
check "resumed run exits 0 (rc $rc): $(tail -2 "$work/kill2.err")" '[[ $rc -eq 0 ]]'
losses "$work/kill/train_log.jsonl" >"$work/kill.losses"
check "resumed losses equal the uninterrupted run's, bit for bit" 'diff -q "$work/one.losses" "$work/kill.losses" >/dev/null'
check "byte-identical final model" 'cmp -s "$work/one/final/model.safetensors" "$work/kill/final/model.safetensors"'
job "$work/lex" 1 3 1 lexicon >"$work/lex.yaml"
"$ALN" train "$work/lex.yaml" >/dev/null 2>"$work/lex.err"; rc=$?
check "lexicon weights run (rc $rc): $(tail -1 "$work/lex.err")" '[[ $rc -eq 0 ]]'
job "$work/spans" 1 3 1 spans >"$work/spans.yaml"
"$ALN" train "$work/spans.yaml" >/dev/null 2>"$work/spans.err"; rc=$?
check "span weights run (rc $rc): $(tail -1 "$work/spans.err")" \
  '[[ $rc -eq 0 ]] && tail -1 "$work/spans/train_log.jsonl" | grep -q "weighted_token_share"'
"$PYTHON" tests/e2e/make_random_rm.py "$work/rm" >/dev/null 2>&1
job "$work/rf" 1 3 1 not_in_positive ", reward_filter: true, min_reward_margin: 0.0" "
    reward_models: [{name: judge, path: $work/rm}]" >"$work/rf.yaml"
"$ALN" train "$work/rf.yaml" >/dev/null 2>"$work/rf.err"; rc=$?
kept() { grep -o "stage ptalign (ptalign): [0-9]* train" "$1" | grep -o "[0-9]* train" | cut -d" " -f1; }
check "the reward-margin filter drops generated pairs (rc $rc; $(kept "$work/one.err") -> $(kept "$work/rf.err") train pairs)" \
  '[[ $rc -eq 0 && $(kept "$work/rf.err") -lt $(kept "$work/one.err") ]]'
job "$work/rf0" 1 3 1 not_in_positive ", reward_filter: true" >"$work/rf0.yaml"
"$ALN" train "$work/rf0.yaml" >/dev/null 2>"$work/rf0.err"; rc=$?
check "the reward filter without a reward model is refused (rc $rc)" \
  '[[ $rc -ne 0 ]] && grep -q "trainer.ptalign.reward_filter: needs a reward model" "$work/rf0.err"'
summary
