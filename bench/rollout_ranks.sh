#!/usr/bin/env bash
# GRPO step time with generation on the policy's own rank (colocated) and on a rollout rank of its
# own (parallel.rollout.ranks: 1), asked for ahead (parallel.rollout.ahead, the default: generation
# overlaps training) or one request at a time, on-policy and with max_staleness 1, as JSON:
#   bench/rollout_ranks.sh [ALN] [STEPS] > rollout_ranks.json
# A small Llama (hidden 128, 4 layers, the GPT-2 vocabulary), 4 prompts x 4 samples of up to 32
# tokens per step in 2 micro-batches, the brevity rule, one thread per rank. Reports mean step
# time, the forward phase (generation or the wait for it happens inside it), the seconds the policy
# rank waited for its rollout rank (train_log's rollout_wait_seconds: weights sent + generation not
# yet done), that wait's share of the step, and each separate run's step time over its colocated
# run's. On-policy, asking ahead overlaps a step's second micro-batch's generation with its first's
# training; with max_staleness 1 a snapshot's two steps are asked for at once, so the second step's
# generation overlaps the first step's training. Every run samples the same tokens (tests check it
# bit for bit). Means over the steps after the first 4 (an even number of steps with the default 20).
set -euo pipefail
ALN="${1:-build/bin/aln}"; STEPS="${2:-20}"
[[ "$STEPS" -ge 6 ]] || { echo "rollout_ranks.sh: STEPS must be at least 6" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
job() {  # job NAME ROLLOUT_RANKS STALENESS AHEAD
  cat <<YAML
name: bench-$1
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 128, num_layers: 4, num_heads: 4, num_kv_heads: 2, intermediate_size: 352, max_position: 256}
trainer: {grpo: {group_size: 4, max_new_tokens: 32, reward_rule: brevity, max_staleness: $3}}
data:
  train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts}]
  max_prompt_length: 40
optimizer: {lr: 1e-3, max_steps: $STEPS, micro_batch_size: 2, gradient_accumulation: 2}
parallel: {rollout: {ranks: $2, ahead: $4}}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
mpi() { mpirun -np "$1" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 "${@:2}"; }
for k in 0 1; do
  job "colocated_k$k" 0 $k true >"$work/colocated_k$k.yaml"; "$ALN" train "$work/colocated_k$k.yaml" >/dev/null 2>&1
  for ahead in true false; do
    job "separate_k${k}_$ahead" 1 $k $ahead >"$work/separate_k${k}_$ahead.yaml"
    mpi 2 "$ALN" train "$work/separate_k${k}_$ahead.yaml" >/dev/null 2>&1
  done
done
python3 - "$work" <<'PY'
import json, statistics, sys
def stats(name):
    # Means, not medians: asking ahead with max_staleness 1 alternates a step that waits with one
    # that does not, and a median would pick one of the two.
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{name}/train_log.jsonl")][4:]
    mean = lambda f: statistics.fmean(f(r) for r in rows)
    out = {"step_s": mean(lambda r: r["seconds"]), "forward_s": mean(lambda r: r["phases"]["forward"]),
           "backward_s": mean(lambda r: r["phases"]["backward"]),
           "completion_length": mean(lambda r: r["metrics"]["completion_length"])}
    if "rollout_wait_seconds" in rows[0]:
        out["rollout_wait_s"] = mean(lambda r: r["rollout_wait_seconds"])
        out["rollout_wait_share"] = mean(lambda r: r["rollout_wait_seconds"] / r["seconds"])
    return out
result = {"config": "GRPO, tiny Llama hidden 128 x 4 layers, vocab 50257, 4 prompts x 4 samples x <= 32 tokens per "
                     "step in 2 micro-batches, 1 thread per rank, 1 policy rank + 1 rollout rank"}
for k in (0, 1):
    colocated = stats(f"colocated_k{k}")
    case = {"colocated": colocated}
    for ahead in ("true", "false"):
        separate = stats(f"separate_k{k}_{ahead}")
        separate["step_time_vs_colocated"] = separate["step_s"] / colocated["step_s"]
        case["rollout_rank_" + ("ahead" if ahead == "true" else "one_at_a_time")] = separate
    result[f"max_staleness_{k}"] = case
print(json.dumps(result, indent=2))
PY
