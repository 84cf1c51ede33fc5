#!/usr/bin/env bash
# Memory per rank with fully sharded parameters (parallel.policy.shard: full) against the unsharded
# policy, under a per-rank memory limit the kernel enforces, as JSON:
#   bench/fsdp_memory.sh [ALN] [LIMIT_MIB] > fsdp_memory.json
# The model: Llama, hidden 1024, 16 layers, intermediate 4096, the GPT-2 vocabulary (tied): 320M
# parameters, so its unsharded training state (float32 weights, gradients and AdamW's two moments,
# 16 bytes a parameter) is 5.1 GB. SFT, 2 steps of one sequence per rank, one thread per rank, and a
# checkpoint after step 2 (a fully sharded run's: each rank writes its own shard).
#
# How the limit is set: every rank runs in a memory cgroup of its own (v1 memory.limit_in_bytes or
# v2 memory.max, made under this process's cgroup; swap, where there is any, limited alike), so the
# kernel stops a rank that needs more (the OOM killer: SIGKILL). The peak each rank reached is the
# cgroup's own high-water mark (v1 memory.max_usage_in_bytes, v2 memory.peak): resident memory and
# page cache charged to the rank, which includes the final model file rank 0 writes. Runs:
#   unsharded-unlimited   one process, no limit: what the job needs whole
#   unsharded-limited     one process under LIMIT_MIB (default 4500): expected to be stopped
#   full-2-unlimited, full-4-unlimited   2 and 4 ranks, shard: full, no limit: what each rank needs
#   full-4-limited        4 ranks, shard: full, each under LIMIT_MIB: expected to finish
# Needs root and a writable memory cgroup (a container may not have one: the script says so and
# exits 2).
set -uo pipefail
ALN="$(realpath "${1:-build/bin/aln}")"; LIMIT_MIB="${2:-4500}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="$(mktemp -d)"

# This process's memory cgroup, v1 or v2.
if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes || -d /sys/fs/cgroup/memory ]]; then
  cg_root="/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)"
  limit_file=memory.limit_in_bytes; swap_file=memory.memsw.limit_in_bytes; peak_file=memory.max_usage_in_bytes
else
  cg_root="/sys/fs/cgroup$(awk -F: '$1 == 0 {print $3}' /proc/self/cgroup)"
  limit_file=memory.max; swap_file=memory.swap.max; peak_file=memory.peak
fi
cg_root="$cg_root/aln-fsdp-bench-$$"
if ! mkdir -p "$cg_root" 2>/dev/null || [[ ! -w "$cg_root" ]]; then
  echo "no writable memory cgroup under ${cg_root%/*}: this bench needs one (root, cgroup v1 memory or v2)" >&2
  exit 2
fi
cleanup() {
  pkill -9 -f "$work/" 2>/dev/null
  for d in "$cg_root"/*/; do [[ -d "$d" ]] && rmdir "$d" 2>/dev/null; done
  rmdir "$cg_root" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT

# The wrapper each rank runs: into a cgroup of its own (named after the run and the MPI rank), then aln.
cat >"$work/in_cgroup.sh" <<'SH'
#!/usr/bin/env bash
cg="$CG_RUN/rank${OMPI_COMM_WORLD_RANK:-0}"
mkdir -p "$cg"
if [[ "$CG_LIMIT" != max ]]; then
  echo "$CG_LIMIT" >"$cg/$CG_LIMIT_FILE"
  [[ -f "$cg/$CG_SWAP_FILE" ]] && echo "$CG_LIMIT" >"$cg/$CG_SWAP_FILE" 2>/dev/null
  [[ "$CG_SWAP_FILE" == memory.swap.max && -f "$cg/$CG_SWAP_FILE" ]] && echo 0 >"$cg/$CG_SWAP_FILE"
fi
echo $$ >"$cg/cgroup.procs"
exec "$@"
SH
chmod +x "$work/in_cgroup.sh"

job() {  # job NAME DP SHARD
  cat <<YAML
name: fsdp-memory
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 1024, num_layers: 16, num_heads: 8, num_kv_heads: 8, intermediate_size: 4096, max_position: 256, tie_embeddings: true}
trainer: {sft: {}}
data:
  train: [{path: examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz, format: hh_rlhf, limit: 40}]
  max_prompt_length: 32
  max_response_length: 16
  bad_records: skip
optimizer: {lr: 1e-4, max_steps: 2, micro_batch_size: 1, warmup_steps: 1}
parallel: {policy: {data_parallel: $2, shard: $3}, timeout_s: 120}
checkpoint: {every_steps: 2}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
mpi() { mpirun -np "$1" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 \
  -x CG_RUN -x CG_LIMIT -x CG_LIMIT_FILE -x CG_SWAP_FILE "${@:2}"; }

results=()
run() {  # run NAME RANKS SHARD LIMIT_BYTES|max
  local name=$1 ranks=$2
  job "$name" "$ranks" "$3" >"$work/$name.yaml"
  export CG_RUN="$cg_root/$name" CG_LIMIT="$4" CG_LIMIT_FILE="$limit_file" CG_SWAP_FILE="$swap_file"
  local start rc peaks=""
  start=$(date +%s.%N)
  if [[ $ranks -eq 1 ]]; then
    "$work/in_cgroup.sh" "$ALN" train "$work/$name.yaml" >"$work/$name.out" 2>&1; rc=$?
  else
    mpi "$ranks" "$work/in_cgroup.sh" "$ALN" train "$work/$name.yaml" >"$work/$name.out" 2>&1; rc=$?
  fi
  local seconds; seconds=$(python3 -c "import sys; print(round(float(sys.argv[1]), 1))" "$(echo "$(date +%s.%N) - $start" | bc)")
  for ((r = 0; r < ranks; r++)); do
    peaks+="$(cat "$CG_RUN/rank$r/$peak_file" 2>/dev/null || echo 0),"
    rmdir "$CG_RUN/rank$r" 2>/dev/null
  done
  rmdir "$CG_RUN" 2>/dev/null
  # Each rank's peak resident memory through its last training step (the train log's
  # rank_peak_rss_bytes; one process: peak_rss_bytes): the process alone, no page cache, before the
  # final model is gathered and written.
  local rss
  rss=$(python3 - "$work/$name/train_log.jsonl" <<'PY'
import json, sys
try:
    last = [json.loads(l) for l in open(sys.argv[1])][-1]
    print(",".join(str(int(v)) for v in last.get("rank_peak_rss_bytes", [last["peak_rss_bytes"]])))
except (OSError, IndexError, KeyError, ValueError):
    print("")
PY
)
  # Each rank's peak resident memory when its policy was ready (the job log's "peak resident memory
  # so far", in rank order): what starting took, before any training.
  local start_peaks
  start_peaks=$(python3 - "$work/$name.out" <<'PY'
import re, sys
peaks = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"r(\d+)/policy\].* parameters; peak resident memory so far ([0-9.]+) MiB", line)
    if m:
        peaks[int(m.group(1))] = int(float(m.group(2)) * 1048576)
print(",".join(str(peaks[r]) for r in sorted(peaks)))
PY
)
  # The checkpoint's files: one whole model and optimizer file, or one shard per rank.
  local files
  files=$(find "$work/$name/checkpoints" -name '*.safetensors' ! -name rng.safetensors -printf '{"file": "%P", "bytes": %s},' 2>/dev/null)
  echo "$name: rc $rc, ${seconds}s, cgroup peak bytes per rank ${peaks%,}; training peak RSS per rank ${rss:-none}" >&2
  results+=("{\"run\": \"$name\", \"ranks\": $ranks, \"shard\": \"$3\", \"limit_bytes\": \"$4\", \"exit_code\": $rc, \"seconds\": $seconds, \"cgroup_peak_bytes_per_rank\": [${peaks%,}], \"training_peak_rss_per_rank\": [$rss], \"start_peak_rss_per_rank\": [$start_peaks], \"checkpoint_files\": [${files%,}], \"finished\": $([[ -f $work/$name/final/model.safetensors ]] && echo true || echo false)}")
}
limit=$((LIMIT_MIB * 1024 * 1024))
run unsharded-unlimited 1 none max
run unsharded-limited 1 none "$limit"
run full-2-unlimited 2 full max
run full-4-unlimited 4 full max
run full-4-limited 4 full "$limit"
params=$(grep -o 'llama, [0-9.]*M parameters' "$work/unsharded-unlimited.out" | grep -o '[0-9.]*M')
printf '{"bench": "fsdp_memory", "model_parameters": "%s", "unsharded_state_bytes": %s, "limit_bytes": %s, "runs": [%s]}\n' \
  "$params" "$(python3 -c "print(int(float('${params%M}') * 1e6 * 16))")" "$limit" "$(IFS=,; echo "${results[*]}")"
