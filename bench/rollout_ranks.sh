#!/usr/bin/env bash
# GRPO step time with generation on the policy's own rank (colocated) and on a rollout rank of its
# own (parallel.rollout.ranks: 1), as JSON:
#   bench/rollout_ranks.sh [ALN] [STEPS] > rollout_ranks.json
# A small Llama (hidden 128, 4 layers, the GPT-2 vocabulary), 4 prompts x 4 samples of up to 32
# tokens per step, the brevity rule, one thread per rank. Reports median step time, the forward phase
# (generation happens inside it), the seconds the policy rank waited for its rollout rank
# (train_log's rollout_wait_seconds: weights sent + generation), and the share of the step that wait
# is. The rollout ranks are synchronous today, so the wait share is the part of a step overlap could
# hide; the ratio step(separate) / step(colocated) is what moving generation away costs now (the
# weights travel as control messages every step). Medians over the steps after the first 3.
set -euo pipefail
ALN="${1:-build/bin/aln}"; STEPS="${2:-20}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
job() {  # job NAME ROLLOUT_RANKS
  cat <<YAML
name: bench-$1
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 128, num_layers: 4, num_heads: 4, num_kv_heads: 2, intermediate_size: 352, max_position: 256}
trainer: {grpo: {group_size: 4, max_new_tokens: 32, reward_rule: brevity}}
data:
  train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts}]
  max_prompt_length: 40
optimizer: {lr: 1e-3, max_steps: $STEPS, micro_batch_size: 2, gradient_accumulation: 2}
parallel: {rollout: {ranks: $2}}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
mpi() { mpirun -np "$1" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 "${@:2}"; }
job colocated 0 >"$work/colocated.yaml"; "$ALN" train "$work/colocated.yaml" >/dev/null 2>&1
job separate 1 >"$work/separate.yaml"; mpi 2 "$ALN" train "$work/separate.yaml" >/dev/null 2>&1
python3 - "$work" <<'PY'
import json, statistics, sys
def stats(name):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{name}/train_log.jsonl")][3:]
    med = lambda f: statistics.median(f(r) for r in rows)
    out = {"step_s": med(lambda r: r["seconds"]), "forward_s": med(lambda r: r["phases"]["forward"]),
           "backward_s": med(lambda r: r["phases"]["backward"]),
           "completion_length": med(lambda r: r["metrics"]["completion_length"])}
    if "rollout_wait_seconds" in rows[0]:
        out["rollout_wait_s"] = med(lambda r: r["rollout_wait_seconds"])
        out["rollout_wait_share"] = med(lambda r: r["rollout_wait_seconds"] / r["seconds"])
    return out
colocated, separate = stats("colocated"), stats("separate")
print(json.dumps({"config": "GRPO, tiny Llama hidden 128 x 4 layers, vocab 50257, 4 prompts x 4 samples x <= 32 "
                            "tokens per step, 1 thread per rank",
                  "colocated": colocated, "one_rollout_rank": separate,
                  "step_time_separate_vs_colocated": separate["step_s"] / colocated["step_s"]}, indent=2))
PY
