#!/usr/bin/env bash
# Pipeline bubble, measured vs theoretical, as JSON:
#   bench/pipeline_bubble.sh [ALN] [STEPS] > pipeline_bubble.json
# Runs the same SFT job (a Llama of hidden 256 x 8 layers, the GPT-2 vocabulary) in one process and
# on 2 pipeline stages (1F1B, 1 thread per rank, MPI over shared memory) with m = 1, 2, 4, 8
# micro-batches of 2 sequences per step, and reports per stage the measured bubble (time waiting for
# the neighbour's activations or gradients / the step's schedule time, train_log.jsonl's "pipeline"
# field) next to the theoretical (p - 1) / (m + p - 1), and samples/s against one process with the
# same micro-batches. Medians over the steps after the first 3. Two splits: the default one balanced
# by parameter count ([0, 4) [4, 8): the embedding weighs as much as the output projection but costs
# almost nothing, so the last stage is ~2.5x slower) and stage_layers [7, 1] (balanced by measured
# time: the output projection and its log-softmax over 50,257 tokens cost about six layers). Two
# stages on this 2-core machine: one core each, so the ratios mean something.
set -euo pipefail
ALN="${1:-build/bin/aln}"; STEPS="${2:-15}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
job() {  # job NAME PP MICRO_BATCHES [STAGE_LAYERS]
  cat <<YAML
name: bench-$1
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 256, num_layers: 8, num_heads: 8, num_kv_heads: 4, intermediate_size: 688, max_position: 256}
trainer: {sft: {}}
data:
  train: [{path: examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz, format: hh_rlhf, limit: 600}]
  max_prompt_length: 48
  max_response_length: 48
  bad_records: skip
optimizer: {lr: 1e-3, max_steps: $STEPS, micro_batch_size: 2, gradient_accumulation: $3}
parallel: {policy: {pipeline_parallel: $2, schedule: one_f_one_b ${4:-}}}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
mpi() { mpirun -np "$1" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader \
  -x OMP_NUM_THREADS=1 "${@:2}"; }
for m in 1 2 4 8; do
  job one-$m 1 $m >"$work/one-$m.yaml"; OMP_NUM_THREADS=1 "$ALN" train "$work/one-$m.yaml" >/dev/null 2>&1
  job pp2-$m 2 $m >"$work/pp2-$m.yaml"; mpi 2 "$ALN" train "$work/pp2-$m.yaml" >/dev/null 2>&1
  job pp2t-$m 2 $m ", stage_layers: [7, 1]" >"$work/pp2t-$m.yaml"; mpi 2 "$ALN" train "$work/pp2t-$m.yaml" >/dev/null 2>&1
done
python3 - "$work" <<'PY'
import json, statistics, sys
def rows(name): return [json.loads(l) for l in open(f"{sys.argv[1]}/{name}/train_log.jsonl")][3:]
out = {"config": "SFT, Llama hidden 256 x 8 layers, vocab 50257, micro-batch 2, 2 stages (1F1B) vs one process, "
                  "1 thread per rank", "runs": []}
for split, prefix in (("parameters [0,4) [4,8)", "pp2"), ("time [0,7) [7,8)", "pp2t")):
  for m in (1, 2, 4, 8):
    one, pp = rows(f"one-{m}"), rows(f"{prefix}-{m}")
    med = lambda rs, f: statistics.median(f(r) for r in rs)
    stages = pp[0]["pipeline"]["stages"]
    run = {"split": split, "micro_batches": m, "theoretical_bubble": pp[0]["pipeline"]["theoretical_bubble"],
           "measured_bubble": [med(pp, lambda r, s=s: r["pipeline"]["bubble"][s]) for s in range(stages)],
           "forward_s": [med(pp, lambda r, s=s: r["pipeline"]["forward_seconds"][s]) for s in range(stages)],
           "backward_s": [med(pp, lambda r, s=s: r["pipeline"]["backward_seconds"][s]) for s in range(stages)],
           "max_alive": pp[-1]["pipeline"]["max_alive"],
           "samples_per_s_one_process": med(one, lambda r: r["samples"] / r["seconds"]),
           "samples_per_s_two_stages": med(pp, lambda r: r["samples"] / r["seconds"])}
    run["speedup_two_stages_vs_one"] = run["samples_per_s_two_stages"] / run["samples_per_s_one_process"]
    out["runs"].append(run)
print(json.dumps(out, indent=2))
PY
