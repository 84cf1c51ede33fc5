#!/usr/bin/env bash
# Checkpoints and resume: a two-stage job (SFT, then DPO with cached reference log-probs) killed
# with SIGKILL in the middle of the second stage and resumed with --resume logs bitwise the same
# losses, step for step, and ends with a byte-identical final model as the same job run without
# interruption. Also: keep_last prunes, no temporary directories survive, a damaged newest
# checkpoint is skipped, a changed job is refused, the reference cache is reused by a later run.
set -uo pipefail
ALN="$1"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh

job() {  # job OUTPUT_DIR [DPO_BETA]
  cat <<YAML
name: resume-test
output_dir: $1
seed: 7
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, max_position: 256}
stages:
  - name: sft
    trainer: {sft: {}}
    data:
      train: [{path: examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz, format: hh_rlhf, limit: 120}]
      max_prompt_length: 48
      max_response_length: 24
      bad_records: skip
    optimizer: {lr: 3e-3, max_steps: 30, micro_batch_size: 4, warmup_steps: 3}
  - name: dpo
    trainer: {dpo: {beta: ${2:-0.1}}}
    data:
      train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf, limit: 120}]
      max_prompt_length: 48
      max_response_length: 24
    reference: {cache_dir: $work/refcache}
    optimizer: {lr: 1e-3, max_steps: 40, micro_batch_size: 4, gradient_accumulation: 2}
checkpoint: {every_steps: 5, keep_last: 2}
metrics: {enabled: false, progress_bar: false}
eval: {every_steps: 10}
runtime: {threads: 1}
YAML
}
job "$work/a" >"$work/a.yaml"
job "$work/b" >"$work/b.yaml"

# A: uninterrupted.
"$ALN" train "$work/a.yaml" >"$work/a.out" 2>"$work/a.err"; rc=$?
check "uninterrupted run exits 0 (rc $rc): $(tail -3 "$work/a.err")" "[[ $rc -eq 0 ]]"
check "first run computes the reference cache" "grep -q 'reference log-probs: computed and cached' '$work/a.err'"

# B: killed with SIGKILL once the log shows global step 47 (stage dpo, step 17), then resumed.
"$ALN" train "$work/b.yaml" >"$work/b1.out" 2>"$work/b1.err" &
pid=$!
await_logged_step "$work/b/train_log.jsonl" 47
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; pid=""
killed_at=$(grep -c . "$work/b/train_log.jsonl" 2>/dev/null || echo 0)
check "run B was killed mid-way (after $killed_at logged steps, before 70)" "[[ $killed_at -ge 45 && $killed_at -lt 70 ]]"
check "keep_last 2: two complete checkpoints at the kill" "[[ \$(ls -d '$work/b/checkpoints'/step-* | wc -l) -eq 2 ]]"
"$ALN" train "$work/b.yaml" --resume >"$work/b2.out" 2>"$work/b2.err"; rc=$?
check "resumed run exits 0 (rc $rc): $(tail -3 "$work/b2.err")" "[[ $rc -eq 0 ]]"
check "resumed mid-way through the dpo stage: $(grep resuming "$work/b2.err")" "grep -Eq 'resuming from .*step-000000[4-6][05] \(step [4-6][05], stage dpo at step [0-9]+\)' '$work/b2.err'"
check "resumed run reuses the reference cache" "grep -q 'reference log-probs: reused' '$work/b2.err'"

losses "$work/a/train_log.jsonl" >"$work/a.losses"
losses "$work/b/train_log.jsonl" >"$work/b.losses"
check "70 steps logged by each run ($(wc -l <"$work/a.losses"), $(wc -l <"$work/b.losses"))" \
  "[[ \$(wc -l <'$work/a.losses') -eq 70 && \$(wc -l <'$work/b.losses') -eq 70 ]]"
check "losses and gradient norms bitwise identical: $(diff "$work/a.losses" "$work/b.losses" | head -4 | tr '\n' ' ')" \
  "diff -q '$work/a.losses' '$work/b.losses' >/dev/null"
check "final models byte-identical" "cmp -s '$work/a/final/model.safetensors' '$work/b/final/model.safetensors'"
check "before/after tables identical" "diff <(grep -A100 '^stage' '$work/a.out' | grep -v '^final') <(grep -A100 '^stage' '$work/b2.out' | grep -v '^final') >/dev/null"
check "periodic eval lines logged (dpo: before, 4 periodic, after)" \
  "[[ \$(grep -c '\"stage\":\"dpo\"' '$work/b/eval.jsonl') -eq 6 ]]"
check "no temporary checkpoint directories left" "[[ -z \$(ls -A '$work/b/checkpoints' | grep -v '^step-') ]]"
check "kept checkpoints are the last two" "[[ \$(ls '$work/b/checkpoints' | tr '\n' ' ') == 'step-00000065 step-00000070 ' ]]"

# A damaged newest checkpoint is skipped (with a warning) in favour of the one before.
rm "$work/b/checkpoints/step-00000070/optimizer.safetensors"
"$ALN" train "$work/b.yaml" --resume >"$work/b3.out" 2>"$work/b3.err"; rc=$?
check "damaged checkpoint skipped (rc $rc)" "[[ $rc -eq 0 ]] && grep -q 'skipping checkpoint .*step-00000070: .*optimizer.safetensors is listed in MANIFEST.json but missing' '$work/b3.err' && grep -q 'resuming from .*step-00000065' '$work/b3.err'"
check "and the result is still the same" "cmp -s '$work/a/final/model.safetensors' '$work/b/final/model.safetensors'"

# A different job cannot resume another's checkpoint.
job "$work/b" 0.5 >"$work/c.yaml"
"$ALN" train "$work/c.yaml" --resume >/dev/null 2>"$work/c.err"; rc=$?
check "changed job refused (rc $rc): $(tail -1 "$work/c.err")" "[[ $rc -ne 0 ]] && grep -q 'different model, seed, stages' '$work/c.err'"

summary
