#!/usr/bin/env bash
# TDPO and Ra-DPO end to end on the repository's data (small settings):
#  - examples/tdpo.yaml and examples/radpo.yaml validate;
#  - an SFT -> tdpo/radpo job runs in one process, logs its method metrics (seqkl_*, risk_*) and
#    learns (held-out loss below log 2 after the stage);
#  - the same job on 3 data-parallel ranks under mpirun (parallel.deterministic) ends with the same
#    losses as one process accumulating the three micro-batches, bit for bit;
#  - killed with SIGKILL mid-stage and resumed, it logs the same losses bit for bit and ends with a
#    byte-identical final model (the on-the-fly reference is restored from the checkpoint).
# Usage: token_level_test.sh ALN MPIEXEC
set -uo pipefail
ALN="$1"; MPIEXEC="$2"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh

job() {  # job OUT TRAINER_LINE MICRO ACCUM DP
  job_head token-level-test "$1" 11
  cat <<YAML
stages:
  - name: sft
    trainer: {sft: {}}
    data:
      train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}]
      max_prompt_length: 32
      max_response_length: 16
    optimizer: {lr: 3e-3, max_steps: 6, micro_batch_size: $3, gradient_accumulation: $4}
  - name: pairs
    trainer: {$2}
    data:
      train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}]
      max_prompt_length: 32
      max_response_length: 16
    optimizer: {lr: 3e-3, max_steps: 14, micro_batch_size: $3, gradient_accumulation: $4}
eval: {max_examples: 24}
YAML
  job_tail $5 4
}

for example in examples/tdpo.yaml examples/radpo.yaml; do
  check "$example validates" '"$ALN" train "$example" --dry-run >/dev/null 2>&1'
done

for method in tdpo radpo; do
  if [[ $method == tdpo ]]; then line="tdpo: {beta: 0.5, variant: variant_1, chunk_size: 16}"; key=seqkl_chosen
  else line="radpo: {beta: 0.5, variant: variant_2, risk: cvar, mu: 0.9, split_vocabulary: true, chunk_size: 16}"; key=risk_chosen; fi
  # One process, micro 2 x accumulation 3.
  job "$work/$method-one" "$line" 2 3 1 >"$work/$method-one.yaml"
  "$ALN" train "$work/$method-one.yaml" >"$work/$method-one.out" 2>"$work/$method-one.err"; rc=$?
  check "$method: one process exits 0 (rc $rc): $(tail -2 "$work/$method-one.err")" '[[ $rc -eq 0 ]]'
  check "$method: the stage logs its method metric ($key)" 'grep -q "\"$key\"" "$work/$method-one/train_log.jsonl"'
  after="$(awk -v m=pairs '$1 == m && $3 == "loss" {print $5}' "$work/$method-one.out")"
  check "$method: held-out loss after the stage below log 2 ($after)" \
    'python3 -c "import sys; sys.exit(0 if float(\"$after\") < 0.6931 else 1)"'
  # Three ranks, micro 2 each, deterministic reduction: the same steps bit for bit.
  job "$work/$method-dp3" "$line" 2 1 3 >"$work/$method-dp3.yaml"
  mpi 3 "$ALN" train "$work/$method-dp3.yaml" >"$work/$method-dp3.out" 2>"$work/$method-dp3.err"; rc=$?
  check "$method: mpirun -np 3 exits 0 (rc $rc): $(tail -2 "$work/$method-dp3.err")" '[[ $rc -eq 0 ]]'
  losses "$work/$method-one/train_log.jsonl" >"$work/$method-one.losses"
  losses "$work/$method-dp3/train_log.jsonl" >"$work/$method-dp3.losses"
  check "$method: 3 ranks (deterministic) log the same 20 losses and grad norms as one process" \
    '[[ $(wc -l <"$work/$method-one.losses") -eq 20 ]] && diff -q "$work/$method-one.losses" "$work/$method-dp3.losses" >/dev/null'
  # Killed in the pairs stage after global step 15 (checkpoint at 12), then resumed.
  job "$work/$method-kill" "$line" 2 3 1 >"$work/$method-kill.yaml"
  run_and_kill "$work/$method-kill.yaml" "$work/$method-kill" 15
  check "$method: killed mid-stage (after $killed_at steps)" '[[ $killed_at -ge 13 && $killed_at -lt 20 ]]'
  "$ALN" train "$work/$method-kill.yaml" --resume >/dev/null 2>"$work/$method-kill2.err"; rc=$?
  check "$method: resumed run exits 0 (rc $rc): $(tail -2 "$work/$method-kill2.err")" '[[ $rc -eq 0 ]]'
  losses "$work/$method-kill/train_log.jsonl" >"$work/$method-kill.losses"
  check "$method: resumed losses equal the uninterrupted run's, bit for bit" \
    'diff -q "$work/$method-one.losses" "$work/$method-kill.losses" >/dev/null'
  check "$method: byte-identical final model" \
    'cmp -s "$work/$method-one/final/model.safetensors" "$work/$method-kill/final/model.safetensors"'
done
summary
