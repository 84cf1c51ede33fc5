#!/usr/bin/env bash
# `aln` against files built to hurt it (the probes of issue 24, turned into checks): model files
# and tokenizers nested 10^6 deep, data rows with huge or deep values, YAML alias bombs and deep YAML. Each
# must end with exit code 2 and one short line naming the file and the limit, quickly and in
# little memory. Usage: hostile_inputs_test.sh ALN   (run from the repository root)
set -uo pipefail
ALN="$1"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
failures=0; passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
# run NAME -- command...: sets rc, err (stderr), lines (its line count), kb (peak RSS), secs
run() {
  shift 2
  local start=$SECONDS
  /usr/bin/time -f "%M" -o "$tmp/rss" "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
  secs=$((SECONDS - start)); kb="$(tail -1 "$tmp/rss")"
  err="$(cat "$tmp/err")"; lines="$(wc -l <"$tmp/err")"
}
tokenizer=examples/data/tokenizers/gpt2/tokenizer.json
python3 - "$tmp" <<'EOF'
import json, struct, sys
tmp = sys.argv[1]
deep = "[" * 1_000_000 + "]" * 1_000_000
# A model directory whose weights header has a dtype nested a million levels deep.
import os
os.makedirs(f"{tmp}/model")
json.dump({"model_type": "llama", "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1,
           "num_attention_heads": 1, "intermediate_size": 8}, open(f"{tmp}/model/config.json", "w"))
header = '{"model.embed_tokens.weight": {"dtype": ' + deep + ', "shape": [8, 4], "data_offsets": [0, 128]}}'
with open(f"{tmp}/model/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header.encode() + bytes(128))
# A tokenizer.json whose model.type is nested as deep.
tok = json.load(open("examples/data/tokenizers/gpt2/tokenizer.json"))
text = json.dumps(tok)
text = text.replace('"type": "BPE"', '"type": ' + deep, 1)
open(f"{tmp}/tokenizer.json", "w").write(text)
# Data rows: one nested as deep, one with an unterminated 50 MB string.
with open(f"{tmp}/deep.jsonl", "w") as f:
    f.write('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    f.write('{"prompt": ' + deep + ', "chosen": "a", "rejected": "b"}\n')
with open(f"{tmp}/huge.jsonl", "w") as f:
    f.write('{"prompt": "' + "x" * 50_000_000 + "\n")
# YAML alias bombs: the issue's 15 KB file (1,500 stages of 1,500 sources), and one inside the list
# caps (64 stages of 1,024 sources) that the node budget stops.
def bomb(stages, sources, path):
    ds = ", ".join(["*d"] * (sources - 1))
    with open(path, "w") as f:
        f.write("name: bomb\nmodel: {tokenizer: examples/data/tokenizers/gpt2/tokenizer.json}\nstages:\n")
        f.write("  - &s {name: s, trainer: {sft: {}}, data: {train: [&d {path: a.jsonl}, " + ds + "]}}\n")
        for _ in range(stages - 1):
            f.write("  - *s\n")
bomb(1500, 1500, f"{tmp}/bomb_15k.yaml")
bomb(64, 1024, f"{tmp}/bomb_budget.yaml")
EOF

run "deep safetensors" -- "$ALN" generate --model "$tmp/model" --tokenizer "$tokenizer" --prompt hi
check "safetensors dtype nested 10^6 deep: exit 2 (got $rc, $(head -c 300 <<<"$err"))" '[[ $rc -eq 2 ]]'
check "  one line naming the file and the limit" \
  '[[ $lines -eq 1 && "$err" == *"model.safetensors: invalid safetensors file: header: JSON nested deeper than 128 levels (at byte "* ]]'

run "deep tokenizer" -- "$ALN" generate --model "$tmp/model" --tokenizer "$tmp/tokenizer.json" --prompt hi
check "tokenizer.json model.type nested 10^6 deep: exit 2 (got $rc, $(head -c 300 <<<"$err"))" '[[ $rc -eq 2 ]]'
check "  one line naming the file and the limit" \
  '[[ $lines -eq 1 && "$err" == *"tokenizer.json: $: JSON nested deeper than 128 levels (at byte "* ]]'

run "deep data row" -- "$ALN" data validate "$tmp/deep.jsonl"
check "a data row nested 10^6 deep is a bad row with file:line (rc $rc: $(head -c 300 <<<"$err"))" \
  '[[ $rc -eq 1 && "$err" == *"deep.jsonl:2: invalid JSON: JSON nested deeper than 128 levels"* ]]'
run "huge string" -- "$ALN" data validate "$tmp/huge.jsonl"
check "an unterminated 50 MB string is not repeated in the message ($(wc -c <"$tmp/err") bytes of stderr)" \
  '[[ $rc -eq 1 && $(wc -c <"$tmp/err") -lt 2000 && "$err" == *"huge.jsonl:1: invalid JSON"* ]]'

run "alias bomb" -- "$ALN" train "$tmp/bomb_15k.yaml" --dry-run
echo "alias bomb (1,500 x 1,500): exit $rc, ${kb} KiB peak, ${secs} s: $err"
check "15 KB alias bomb: exit 2, one line naming the list cap" \
  '[[ $rc -eq 2 && $lines -eq 1 && "$err" == "$tmp/bomb_15k.yaml:3: stages: too many items: 1500 > maximum 64 (max_items in job.proto)" ]]'
check "  in little memory (${kb} KiB < 200 MiB)" '[[ $kb -lt 204800 ]]'
run "budget bomb" -- "$ALN" train "$tmp/bomb_budget.yaml" --dry-run
echo "alias bomb (64 x 1,024): exit $rc, ${kb} KiB peak, ${secs} s: $err"
check "64 x 1,024 aliases: exit 2, one line naming the node budget" \
  '[[ $rc -eq 2 && $lines -eq 1 && "$err" == *"the spec expands to more than 100000 YAML nodes (limit kMaxSpecNodes"* ]]'
check "  in little memory (${kb} KiB < 200 MiB)" '[[ $kb -lt 204800 ]]'

python3 -c 'print("name: x\nmodel: " + "[" * 10000 + "]" * 10000)' >"$tmp/deep.yaml"
run "deep yaml" -- "$ALN" train "$tmp/deep.yaml" --dry-run
check "YAML nested 10,000 deep: exit 2, one line naming the depth, not just 'bad file' ($err)" \
  '[[ $rc -eq 2 && $lines -eq 1 && "$err" == "$tmp/deep.yaml:2: (yaml): nested more than "*" levels deep (brackets or indentation)"* ]]'

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
