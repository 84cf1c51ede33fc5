#!/usr/bin/env bash
# `aln convert`: its own --help, usage errors, a real training checkpoint to a bfloat16 Hugging Face
# directory that transformers loads, and back to float32 with exactly the bfloat16-rounded weights.
# Usage: convert_test.sh ALN PYTHON   (run from the repository root)
set -uo pipefail
ALN="$1"; PY="$2"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
failures=0; passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }

"$ALN" convert --help >"$tmp/help" 2>&1; rc=$?
check "convert --help: exit 0 and its own usage (rc $rc: $(head -1 "$tmp/help"))" \
  '[[ $rc -eq 0 && "$(head -1 "$tmp/help")" == "usage: aln convert (--checkpoint DIR | --model DIR) --out DIR"* ]]'
"$ALN" convert --out "$tmp/x" >/dev/null 2>"$tmp/err"; rc=$?
check "no source: exit 2 naming both options" \
  '[[ $rc -eq 2 && "$(head -1 "$tmp/err")" == "aln convert: give one of --checkpoint DIR and --model DIR" ]]'
"$ALN" convert --model "$tmp" --out "$tmp/x" --dtype int8 >/dev/null 2>"$tmp/err"; rc=$?
check "bad dtype: exit 2" '[[ $rc -eq 2 ]] && grep -q "dtype: .int8. is not float32, bfloat16 or float16" "$tmp/err"'
"$ALN" convert --checkpoint "$tmp" --out "$tmp/x" >/dev/null 2>"$tmp/err"; rc=$?
check "no checkpoint there: exit 2, one line" '[[ $rc -eq 2 && $(wc -l <"$tmp/err") -eq 1 ]] && grep -q "no complete checkpoint" "$tmp/err"'
# Every command --help lists answers (no command listed that does not work).
for sub in train eval generate data convert version; do
  "$ALN" --help | grep -q "^  $sub" && pass_sub=1 || pass_sub=0
  check "aln --help lists $sub" '[[ $pass_sub -eq 1 ]]'
done

# A real checkpoint: the tiny launcher job, 4 steps, a checkpoint every 2.
sed -E "s/max_steps: [0-9]+/max_steps: 4/" tests/launcher/tiny_job.yaml >"$tmp/job.yaml"
printf 'output_dir: %s/run\ncheckpoint: {every_steps: 2, keep_last: 2}\nmetrics: {enabled: false}\n' "$tmp" >>"$tmp/job.yaml"
sed -i '/^metrics: {progress_bar: false}$/d' "$tmp/job.yaml"
"$ALN" train "$tmp/job.yaml" >"$tmp/train.out" 2>&1; rc=$?
check "the tiny job trains (rc $rc: $(tail -2 "$tmp/train.out"))" '[[ $rc -eq 0 && -d "$tmp/run/checkpoints/step-00000004" ]]'
"$ALN" convert --checkpoint "$tmp/run/checkpoints" --out "$tmp/bf16" --dtype bfloat16 \
  --tokenizer examples/data/tokenizers/gpt2/tokenizer.json >"$tmp/out" 2>&1; rc=$?
check "checkpoint -> bfloat16 HF directory (rc $rc: $(cat "$tmp/out"))" \
  '[[ $rc -eq 0 ]] && grep -q "from $tmp/run/checkpoints/step-00000004/model" "$tmp/out"'
"$ALN" convert --model "$tmp/bf16" --out "$tmp/f32" --max-shard-mb 2 >"$tmp/out" 2>&1; rc=$?
check "bfloat16 -> float32 in 2 MB shards (rc $rc: $(cat "$tmp/out"))" \
  '[[ $rc -eq 0 && -f "$tmp/f32/model.safetensors.index.json" ]]'
"$PY" - "$tmp" >"$tmp/py" 2>&1 <<'PY'
import sys, json, torch, transformers
from safetensors.torch import load_file
tmp = sys.argv[1]
src = load_file(f"{tmp}/run/checkpoints/step-00000004/model/model.safetensors")
bf = load_file(f"{tmp}/bf16/model.safetensors")
index = json.load(open(f"{tmp}/f32/model.safetensors.index.json"))
f32 = {}
for shard in sorted(set(index["weight_map"].values())):
    f32.update(load_file(f"{tmp}/f32/{shard}"))
assert set(src) == set(bf) == set(f32), "tensor names differ"
assert all(t.dtype == torch.bfloat16 for t in bf.values()), "not all bfloat16"
assert all(t.dtype == torch.float32 for t in f32.values()), "not all float32"
assert all(torch.equal(bf[k], src[k].to(torch.bfloat16)) for k in src), "bf16 != rounded source"
assert all(torch.equal(f32[k], bf[k].float()) for k in src), "f32 != widened bf16"
print("shards", len(set(index["weight_map"].values())))
assert json.load(open(f"{tmp}/bf16/config.json"))["torch_dtype"] == "bfloat16"
m = transformers.AutoModelForCausalLM.from_pretrained(f"{tmp}/bf16", torch_dtype="auto")
tok = transformers.PreTrainedTokenizerFast(tokenizer_file=f"{tmp}/bf16/tokenizer.json")
print("dtype", m.dtype, "logits", tuple(m(torch.tensor([tok.encode("hello world")])).logits.shape))
PY
check "weights: bf16 = the checkpoint rounded, f32 = bf16 widened; transformers loads it ($(tail -3 "$tmp/py"))" \
  'grep -q "dtype torch.bfloat16 logits (1, 2, 50257)" "$tmp/py" && grep -qE "^shards [2-9]" "$tmp/py"'
echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
