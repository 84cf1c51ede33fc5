#!/usr/bin/env bash
# Data-parallel step throughput and gradient-communication overlap, as JSON:
#   bench/dp_overlap.sh [ALN] [STEPS] > dp_overlap.json
# Runs the same DPO job (a small Llama: hidden 128, 4 layers, the GPT-2 vocabulary, reference on the
# fly) on 1 rank and on 2 ranks (1 thread each, MPI over loopback) with and
# without parallel.overlap, and reports median step time, samples/s, the communication time left
# after backward (the "communication" phase of train_log.jsonl), and the share of that time the
# overlap hides: 1 - exposed(overlap) / exposed(no overlap); and the 2-rank run again with ZeRO-1 and
# ZeRO-2 (parallel.policy.shard: optimizer / gradients), whose parameter all-gather runs in the
# optimizer phase: communication + optimizer is what to compare. Medians over the steps after the first 5.
set -euo pipefail
ALN="${1:-build/bin/aln}"; STEPS="${2:-40}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
job() {  # job NAME DP OVERLAP MICRO [SHARD]
  cat <<YAML
name: bench-$1
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 128, num_layers: 4, num_heads: 4, num_kv_heads: 2, intermediate_size: 352, max_position: 256}
trainer: {dpo: {}}
data:
  train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}]
  max_prompt_length: 40
  max_response_length: 24
  bad_records: skip
reference: {mode: on_the_fly}
optimizer: {lr: 1e-3, max_steps: $STEPS, micro_batch_size: $4}
parallel: {policy: {data_parallel: $2, shard: ${5:-none}}, overlap: $3}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
mpi() { mpirun -np "$1" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 "${@:2}"; }
job one 1 false 8 >"$work/one.yaml"; "$ALN" train "$work/one.yaml" >/dev/null 2>&1
job plain 2 false 4 >"$work/plain.yaml"; mpi 2 "$ALN" train "$work/plain.yaml" >/dev/null 2>&1
job overlap 2 true 4 >"$work/overlap.yaml"; mpi 2 "$ALN" train "$work/overlap.yaml" >/dev/null 2>&1
job zero1 2 false 4 optimizer >"$work/zero1.yaml"; mpi 2 "$ALN" train "$work/zero1.yaml" >/dev/null 2>&1
job zero2 2 false 4 gradients >"$work/zero2.yaml"; mpi 2 "$ALN" train "$work/zero2.yaml" >/dev/null 2>&1
python3 - "$work" <<'PY'
import json, statistics, sys
def stats(name):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{name}/train_log.jsonl")][5:]
    med = lambda f: statistics.median(f(r) for r in rows)
    return {"step_s": med(lambda r: r["seconds"]), "samples_per_s": med(lambda r: r["samples"] / r["seconds"]),
            "backward_s": med(lambda r: r["phases"]["backward"]), "communication_s": med(lambda r: r["phases"]["communication"]),
            "optimizer_s": med(lambda r: r["phases"]["optimizer"]),
            "communication_plus_optimizer_s": med(lambda r: r["phases"]["communication"] + r["phases"]["optimizer"])}
one, plain, overlap = stats("one"), stats("plain"), stats("overlap")
zero1, zero2 = stats("zero1"), stats("zero2")
print(json.dumps({"config": "DPO, tiny Llama hidden 128 x 4 layers, vocab 50257, global batch 8, 1 thread per rank",
                  "one_rank": one, "two_ranks": plain, "two_ranks_overlap": overlap,
                  "two_ranks_zero1": zero1, "two_ranks_zero2": zero2,
                  "zero2_vs_zero1_samples_per_s": zero2["samples_per_s"] / zero1["samples_per_s"],
                  "speedup_2_vs_1": plain["samples_per_s"] / one["samples_per_s"],
                  "speedup_overlap_vs_plain": overlap["samples_per_s"] / plain["samples_per_s"],
                  "communication_hidden_share": 1 - overlap["communication_s"] / plain["communication_s"]}, indent=2))
PY
