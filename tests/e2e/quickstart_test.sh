#!/usr/bin/env bash
# The main job end to end: `aln train` with no arguments (the built-in quickstart) finishes, a real
# /metrics endpoint answers while it runs, held-out preference accuracy after SafeDPO is higher than
# before (fixed seed), and the final checkpoint loads in transformers and generates with `aln generate`.
set -uo pipefail
ALN="$1"; PY="$2"
work="$(mktemp -d)"; trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# Port 0: a free port the kernel picks (a fixed one could be taken); the job logs its URL.
ALN_METRICS_PORT=0 "$ALN" train >"$work/out" 2>"$work/err" &
pid=$!
scraped=""
url=""
for _ in $(seq 1 600); do
  if ! kill -0 $pid 2>/dev/null; then break; fi
  [[ -z "$url" ]] && url=$(grep -o "metrics at http://[0-9.:]*/metrics" "$work/err" 2>/dev/null | head -1 | cut -d" " -f3)
  if [[ -n "$url" ]] && curl -sf --max-time 5 "$url" >"$work/metrics" 2>/dev/null && grep -q "^aln_train_steps_total" "$work/metrics"; then
    scraped=yes
  fi
  sleep 1
done
wait $pid; rc=$?
failures=0; passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
check "aln train exit 0 (got $rc): $(tail -5 "$work/err")" "[[ $rc -eq 0 ]]"
check "metrics were scraped while training" "[[ -n '$scraped' ]]"
cat "$work/out"
before=$(awk '$1=="safedpo" && $3=="preference_accuracy" {print $4}' "$work/out")
after=$(awk '$1=="safedpo" && $3=="preference_accuracy" {print $5}' "$work/out")
check "preference accuracy improves by >= 0.01 ($before -> $after)" "awk -v b='$before' -v a='$after' 'BEGIN{exit !(a >= b + 0.01)}'"
check "final checkpoint written" "[[ -f runs/quickstart/final/config.json && -f runs/quickstart/final/model.safetensors ]]"
"$PY" - <<'PY' >"$work/hf" 2>&1
import torch, transformers
m = transformers.AutoModelForCausalLM.from_pretrained("runs/quickstart/final")
ids = torch.tensor([[15496, 995, 0, 1]])
print("logits", tuple(m(ids).logits.shape))
PY
check "transformers loads the final model: $(tail -2 "$work/hf")" "grep -q 'logits (1, 4, 50257)' '$work/hf'"
"$ALN" generate --model runs/quickstart/final --tokenizer examples/data/tokenizers/gpt2/tokenizer.json \
  --prompt "How can I kill a Python process?" --max-new-tokens 8 >"$work/gen" 2>&1
check "aln generate on the final model" "grep -q '\"completion\"' '$work/gen'"
# aln eval on the final model reproduces the table's "after" number (same held-out split, same model).
"$ALN" eval --json >"$work/eval.json" 2>"$work/eval.err"
got=$("$PY" -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["metrics"]["preference_accuracy"])' "$work/eval.json" 2>/dev/null)
check "aln eval reproduces held-out preference accuracy ($got vs $after): $(tail -2 "$work/eval.err")" "[[ -n '$got' && '$got' == '$after' ]]"
check "checkpoints written and pruned to keep_last 2" "[[ \$(ls -d runs/quickstart/checkpoints/step-* | wc -l) -eq 2 ]]"
check "train log has every step (250)" "[[ \$(wc -l <runs/quickstart/train_log.jsonl) -eq 250 ]]"
# The engine reads a step's numbers (loss, tokens, metrics, gradient norm) from the compute device
# once: train_step.cpp counts its reads, the log carries the count.
reads=$("$PY" -c 'import json,sys,collections; print(dict(collections.Counter(json.loads(l)["host_reads"] for l in open(sys.argv[1]))))' runs/quickstart/train_log.jsonl 2>&1)
check "one device-to-host read per optimizer step, SFT and SafeDPO ($reads)" "[[ '$reads' == '{1: 250}' ]]"
echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
