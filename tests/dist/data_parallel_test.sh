#!/usr/bin/env bash
# Data-parallel training under a real mpirun (CPU, MPI backend):
#  - equivalence: DPO and SFT on 2 and 4 ranks with parallel.deterministic end after 10 steps with
#    the same parameters (within 1e-6 relative; in fact bit for bit) as one process on the same
#    global batch formed as the ranks' micro-batches accumulated in rank order (micro-batch m,
#    gradient_accumulation = ranks); with MPI's own reduction order they match one process with
#    micro-batch 4 to about 1e-5 (float32 rounding that Adam amplifies where gradients are near 0);
#  - ZeRO-1 (AdamW moments sharded over the ranks): 4 ranks end bit for bit where the unsharded
#    4-rank run does, with the same (gathered) optimizer checkpoint; a ZeRO-1 checkpoint of 2 ranks
#    resumes in one process and ends exactly where the uninterrupted run does;
#  - ZeRO-2 (gradients reduce-scattered, moments sharded): 4 ranks deterministic end byte-identical
#    to the unsharded 4-rank run; 2 ranks with MPI's reduction within 1e-6 of the all-reduce run; a
#    ZeRO-2 checkpoint of 2 ranks resumes in one process to the uninterrupted run's parameters;
#  - FSDP (parallel.policy.shard: full; parameters sharded too, layers gathered as they run): DPO on 4
#    ranks deterministic ends byte-identical to the unsharded 4-rank run, and its sharded checkpoint
#    (one file per rank and an index) put together equals the unsharded checkpoint bit for bit; its
#    step-5 checkpoint resumes on 2 sharded ranks and in one process (within float32 rounding:
#    another summation order), a 2-rank one in one process exactly; aln convert writes its policy;
#    the ranks start sharded (a random model made a tensor at a time, model.path or an unsharded
#    checkpoint read a layer at a time, a sharded checkpoint's own parts), never holding the whole
#    model: model.path gives the unsharded run's bytes, an unsharded checkpoint resumes on them;
#    a rank stopped (SIGSTOP) mid-run makes rank 0 name the stalled collective within timeout_s; the
#    cached reference log-probs are scored by the sharded policy itself (no whole copy); a reference
#    on the fly is sharded as the policy is (byte-identical to the unsharded run, and after a resume;
#    reference.path and a resumed checkpoint's copy streamed into the shards a layer at a time);
#    GRPO, each rank sampling rollouts of its own lengths while the ranks decode in step (with a
#    bounded-staleness snapshot sharded as the policy is), ends byte-identical to the unsharded run
#    with the same rollouts, and its checkpoint resumes sharded or not to the same bytes; so do the controllable method (rl),
#    PT-ALIGN and HAIR (its shadow reward models sharded too, exported byte-identical), with the same held-out
#    metrics, rollouts and self-generated pairs; SFT on 2 ranks with
#    accumulation and MPI's reduction within 1e-6 of the all-reduce run; each step's log line says
#    what the rank held; SFT then DPO in one job byte-identical to the unsharded run; a rank killed
#    mid-run ends the job within 60 s, named;
#  - overlap (gradient buckets summed during backward): 4 ranks deterministic with 2-fold accumulation
#    end byte-identical to the same run without overlap; 2 ranks with MPI's reduction within 1e-6;
#  - faults: a rank killed with SIGKILL, or one that stops answering (SIGSTOP), makes the whole job
#    exit non-zero within a bounded time, never hang; so does a rank stopped before MPI_Init, and a
#    metrics port rank 0 cannot bind ends the job at once, naming the port.
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PY="$3"
work="$(mktemp -d)"; pid=""
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; pkill -9 -f "$work/" 2>/dev/null; rm -rf "$work"' EXIT
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
failures=0; passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
mpi() { "$MPIEXEC" -np "$1" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 "${@:2}"; }

# job_head NAME DIR: the lines every job here starts with (the job's name, its output, the tiny model).
job_head() {
  cat <<YAML
name: $1
output_dir: $work/$2
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_position: 256}
YAML
}
# data_for TRAINER LIMIT: the training data of an SFT job (hh-rlhf) or a preference job (XSTest pairs).
data_for() {
  if [[ $1 == sft ]]; then
    echo "{path: examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz, format: hh_rlhf, limit: $2}"
  else
    echo "{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf, limit: $2}"
  fi
}
job() {  # job NAME TRAINER MICRO DP STEPS [TIMEOUT] [ACCUM] [DETERMINISTIC] [REFERENCE_CACHE_DIR] [ZERO1] [OVERLAP] [SHARD]
  local data
  data=$(data_for "$2" 96)
  job_head "dp-$1" "$1"
  cat <<YAML
trainer: {$2: {}}
data:
  train: [$data]
  max_prompt_length: 40
  max_response_length: 24
  bad_records: skip
optimizer: {lr: 2e-3, max_steps: $5, micro_batch_size: $3, gradient_accumulation: ${7:-1}, warmup_steps: 2}
parallel: {policy: {data_parallel: $4, shard: ${12:-none}}, timeout_s: ${6:-60}, deterministic: ${8:-false}, zero1: ${10:-false}, overlap: ${11:-false}}
reference: {cache_dir: "${9:-}"}
checkpoint: {every_steps: 5}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}

compare() {  # compare DIR_A DIR_B -> prints the largest relative difference over all tensors
  "$PY" - "$1/final/model.safetensors" "$2/final/model.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert a.keys() == b.keys(), "different tensor names"
worst = 0.0
for k in a:
    scale = max(float(abs(a[k]).max()), 1e-12)
    worst = max(worst, float(abs(a[k].astype("float64") - b[k].astype("float64")).max()) / scale)
print(f"{worst:.3e}")
PY
}
same_losses() {  # same_losses LOG_A LOG_B: every step's loss within 1e-5 relative
  "$PY" -c '
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
sys.exit(0 if len(a) == len(b) == 10 and all(abs(x - y) <= 1e-5 * abs(x) for x, y in zip(a, b)) else 1)' "$1" "$2"; }

within() { "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$1" "$2"; }
for trainer in dpo sft; do
  job "$trainer-1" $trainer 4 1 10 >"$work/$trainer-1.yaml"
  "$ALN" train "$work/$trainer-1.yaml" >"$work/$trainer-1.out" 2>&1; rc=$?
  check "$trainer: one process exits 0 (rc $rc): $(tail -2 "$work/$trainer-1.out")" "[[ $rc -eq 0 ]]"
  for np in 2 4; do
    m=$((4 / np))
    job "$trainer-acc$np" $trainer $m 1 10 60 $np >"$work/$trainer-acc$np.yaml"
    "$ALN" train "$work/$trainer-acc$np.yaml" >"$work/$trainer-acc$np.out" 2>&1
    for mode in det mpi; do
      name="$trainer-$np-$mode"
      job "$name" $trainer $m $np 10 60 1 "$([[ $mode == det ]] && echo true || echo false)" >"$work/$name.yaml"
      mpi $np "$ALN" train "$work/$name.yaml" >"$work/$name.out" 2>&1; rc=$?
      check "$name: exits 0 (rc $rc): $(tail -3 "$work/$name.out")" "[[ $rc -eq 0 ]]"
      if [[ $mode == det ]]; then
        diff=$(compare "$work/$trainer-acc$np" "$work/$name" 2>&1)
        echo "$trainer: $np ranks (deterministic) vs one process, micro $m x accumulation $np: max relative difference $diff"
        check "$name: equals one process within 1e-6 ($diff)" "within '$diff' 1e-6"
        check "$name: losses equal one process's within 1e-5" \
          "same_losses '$work/$trainer-acc$np/train_log.jsonl' '$work/$name/train_log.jsonl'"
        check "$name: one device-to-host read per step on $np ranks" \
          "! grep -v '\"host_reads\":1,' '$work/$name/train_log.jsonl' | grep -q ."
      else
        diff=$(compare "$work/$trainer-1" "$work/$name" 2>&1)
        echo "$trainer: $np ranks (MPI all-reduce) vs one process, micro 4: max relative difference $diff"
        check "$name: close to one process ($diff <= 1e-4)" "within '$diff' 1e-4"
        check "$name: losses equal one process's within 1e-5" \
          "same_losses '$work/$trainer-1/train_log.jsonl' '$work/$name/train_log.jsonl'"
      fi
    done
  done
done

# Resume on a different number of ranks: a checkpoint of one process (micro 2 x accumulation 2)
# continued on 2 ranks (micro 2, deterministic) ends exactly where the uninterrupted run did.
job "resume-1" dpo 2 1 10 60 2 true "$work/refcache" >"$work/resume-1.yaml"
"$ALN" train "$work/resume-1.yaml" >"$work/resume-1.out" 2>&1; rc=$?
check "resume: one-process run exits 0 (rc $rc)" "[[ $rc -eq 0 ]]"
mkdir -p "$work/resume-2/checkpoints" && cp -r "$work/resume-1/checkpoints/step-00000005" "$work/resume-2/checkpoints/"
# Same job (name included: it names the stage), other output_dir, 2 ranks.
job "resume-2" dpo 2 2 10 60 1 true "$work/refcache" | sed 's/^name: dp-resume-2/name: dp-resume-1/' >"$work/resume-2.yaml"
mpi 2 "$ALN" train "$work/resume-2.yaml" --resume >"$work/resume-2.out" 2>&1; rc=$?
check "resume: 2 ranks continue from step 5 (rc $rc): $(grep -m1 -E 'resuming|rror' "$work/resume-2.out")" \
  "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000005' '$work/resume-2.out'"
diff=$(compare "$work/resume-1" "$work/resume-2" 2>&1)
echo "resume: 1 process -> 2 ranks at step 5: max relative difference $diff"
check "resume: same final parameters ($diff)" "within '$diff' 0"

# shards_match WHOLE_STEP SHARDED_STEP RANKS: a fully sharded checkpoint holds no whole model or
# optimizer state, one file per rank of about 1/RANKS of the parameters and moments each, and its
# parts, put together here from shards/index.json alone, equal the unsharded checkpoint's model and
# optimizer state bit for bit.
shards_match() {
  "$PY" - "$1" "$2" "$3" <<'PY'
import json, os, sys
import numpy as np
from safetensors.numpy import load_file
whole, sharded, ranks = sys.argv[1], sys.argv[2], int(sys.argv[3])
if os.path.exists(f"{sharded}/model") or os.path.exists(f"{sharded}/optimizer.safetensors"):
    sys.exit("the sharded checkpoint also holds a whole model or optimizer state")
index = json.load(open(f"{sharded}/shards/index.json"))
assert index["ranks"] == ranks and len(index["files"]) == ranks, index["files"]
files = [load_file(f"{sharded}/shards/{f}") for f in index["files"]]
sizes = [sum(a.nbytes for a in f.values()) for f in files]
expect = {**load_file(f"{whole}/model/model.safetensors"), **load_file(f"{whole}/optimizer.safetensors")}
bad = []
for name, t in index["tensors"].items():
    for suffix in ("", ".exp_avg", ".exp_avg_sq"):
        got = np.concatenate([files[r][name + suffix] for r, off, n in t["parts"]]).reshape(t["shape"])
        if not np.array_equal(got, expect[name + suffix]):
            bad.append(name + suffix)
steps = {int(f["step"]) for f in files}
print("fsdp checkpoint: bytes per rank file", sizes, "step", steps, "differing", bad[:3])
sys.exit(0 if not bad and steps == {int(expect["step"])} and max(sizes) < 1.1 * sum(sizes) / ranks + 4096 else 1)
PY
}

# ZeRO-1 and ZeRO-2: the same numbers with the moments (and the summed gradients) sharded: 4 ranks
# end byte-identical to the unsharded 4-rank run, and a sharded checkpoint of 2 ranks resumes in one
# process to the uninterrupted run's parameters.
sharded() {  # sharded LABEL NAME ZERO1 SHARD
  local label=$1 name=$2
  job "dpo-4-$name" dpo 1 4 10 60 1 true "" "$3" false "$4" >"$work/dpo-4-$name.yaml"
  mpi 4 "$ALN" train "$work/dpo-4-$name.yaml" >"$work/dpo-4-$name.out" 2>&1; rc=$?
  check "$label: 4 ranks exit 0 (rc $rc): $(tail -2 "$work/dpo-4-$name.out")" "[[ $rc -eq 0 ]]"
  check "$label: final model byte-identical to the unsharded 4-rank run" \
    "cmp -s '$work/dpo-4-det/final/model.safetensors' '$work/dpo-4-$name/final/model.safetensors'"
  if [[ $4 == full ]]; then
    check "$label: every rank's checkpoint shard, put together by its index, equals the unsharded checkpoint" \
      "shards_match '$work/dpo-4-det/checkpoints/step-00000010' '$work/dpo-4-$name/checkpoints/step-00000010' 4"
  else
    check "$label: the gathered optimizer checkpoint equals the unsharded one" \
      "cmp -s '$work/dpo-4-det/checkpoints/step-00000010/optimizer.safetensors' '$work/dpo-4-$name/checkpoints/step-00000010/optimizer.safetensors'"
  fi
  job "$name-res-2" dpo 2 2 10 60 1 true "$work/refcache" "$3" false "$4" |
    sed "s/^name: dp-$name-res-2/name: dp-resume-1/" >"$work/$name-res-2.yaml"
  mpi 2 "$ALN" train "$work/$name-res-2.yaml" >"$work/$name-res-2.out" 2>&1; rc=$?
  check "$label: 2 ranks exit 0 (rc $rc)" "[[ $rc -eq 0 ]]"
  mkdir -p "$work/$name-res-1/checkpoints" && cp -r "$work/$name-res-2/checkpoints/step-00000005" "$work/$name-res-1/checkpoints/"
  job "$name-res-1" dpo 2 1 10 60 2 true "$work/refcache" | sed "s/^name: dp-$name-res-1/name: dp-resume-1/" >"$work/$name-res-1.yaml"
  "$ALN" train "$work/$name-res-1.yaml" --resume >"$work/$name-res-1.out" 2>&1; rc=$?
  diff=$(compare "$work/resume-1" "$work/$name-res-1" 2>&1)
  echo "$label: 2 sharded ranks -> 1 process at step 5: max relative difference $diff"
  check "$label: a sharded checkpoint resumes in one process to the same final parameters (rc $rc, $diff)" \
    "[[ $rc -eq 0 ]] && within '$diff' 0"
}
sharded zero1 zero true none
sharded zero2 zero2 false gradients
check "zero2: the log says what is sharded" "grep -q 'ZeRO-2: gradients reduce-scattered' '$work/dpo-4-zero2.out'"
sharded fsdp fsdp false full
check "fsdp: the log says what each rank keeps: $(grep -m1 'fully sharded over' "$work/dpo-4-fsdp.out")" \
  "grep -q 'fully sharded over 4 ranks: this rank keeps' '$work/dpo-4-fsdp.out'"
check "fsdp: the ranks started sharded, never holding the whole model: $(grep -m1 'sharded start' "$work/dpo-4-fsdp.out")" \
  "grep -q 'sharded start: each rank filled its shards from a seeded random model, one tensor at a time' '$work/dpo-4-fsdp.out'"
check "fsdp: the sharded policy itself scored the reference cache (no whole copy), byte-identical numbers" \
  "grep -q 'the fully sharded policy, as the stage starts, scores the reference cache' '$work/dpo-4-fsdp.out'"
# What a rank held, from the train log: a quarter of the parameters (plus padding) and never more than
# two layers gathered at once (the one running and the next, prefetched; this model has two equal layers).
fsdp_held() {  # fsdp_held TRAIN_LOG RANKS LAYERS
  "$PY" - "$1" "$2" "$3" <<'PY'
import json, sys
rows = [json.loads(l)["fsdp"] for l in open(sys.argv[1])]
n, num_layers = int(sys.argv[2]), int(sys.argv[3])
print("fsdp, held at step 10:", rows[-1])
ok = len(rows) == 10
for r in rows:
    layer = (r["whole_bytes"] - r["outer_bytes"]) / num_layers
    ok = ok and r["shard_bytes"] <= r["whole_bytes"] / n + 4096 and 0 < r["peak_gathered_layer_bytes"] <= 2 * layer
sys.exit(0 if ok else 1)
PY
}
check "fsdp: every step logs a quarter of the parameters kept and at most two layers gathered at once" \
  "fsdp_held '$work/dpo-4-fsdp/train_log.jsonl' 4 2"
# The reference on the fly beside a fully sharded policy is sharded as the policy is (each rank copies
# its own shards of the policy as the stage starts; a resumed checkpoint's copy is streamed into them).
otf() { sed 's/^reference: {cache_dir: ""}/reference: {mode: on_the_fly}/'; }
job "dpo-4-otf" dpo 1 4 10 60 1 true | otf >"$work/dpo-4-otf.yaml"
mpi 4 "$ALN" train "$work/dpo-4-otf.yaml" >"$work/dpo-4-otf.out" 2>&1; rc_a=$?
job "dpo-4-otf-fsdp" dpo 1 4 10 60 1 true "" false false full | otf >"$work/dpo-4-otf-fsdp.yaml"
mpi 4 "$ALN" train "$work/dpo-4-otf-fsdp.yaml" >"$work/dpo-4-otf-fsdp.out" 2>&1; rc=$?
check "fsdp, reference on the fly: sharded as the policy is ($(grep -m1 -o 'this rank keeps [0-9.]* MiB of its [0-9.]* MiB' "$work/dpo-4-otf-fsdp.out")); final model and checkpointed reference byte-identical to the unsharded 4-rank run (rc $rc_a, $rc)" \
  "[[ $rc_a -eq 0 && $rc -eq 0 ]] && grep -q 'the reference runs on the fly, fully sharded as the policy is' '$work/dpo-4-otf-fsdp.out' && cmp -s '$work/dpo-4-otf/final/model.safetensors' '$work/dpo-4-otf-fsdp/final/model.safetensors' && cmp -s '$work/dpo-4-otf/checkpoints/step-00000010/reference/model.safetensors' '$work/dpo-4-otf-fsdp/checkpoints/step-00000010/reference/model.safetensors'"
mkdir -p "$work/otf-res/checkpoints" && cp -r "$work/dpo-4-otf-fsdp/checkpoints/step-00000005" "$work/otf-res/checkpoints/"
job "otf-res" dpo 1 4 10 60 1 true "" false false full | otf | sed 's/^name: dp-otf-res/name: dp-dpo-4-otf-fsdp/' >"$work/otf-res.yaml"
mpi 4 "$ALN" train "$work/otf-res.yaml" --resume >"$work/otf-res.out" 2>&1; rc=$?
check "fsdp, reference on the fly: resumed at step 5 (the checkpoint's reference streamed into the shards), the same final model byte for byte (rc $rc)" \
  "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000005' '$work/otf-res.out' && grep -q 'the reference was streamed into the shards from .*step-00000005/reference, one layer at a time' '$work/otf-res.out' && grep -q 'the reference runs on the fly, fully sharded' '$work/otf-res.out' && cmp -s '$work/dpo-4-otf/final/model.safetensors' '$work/otf-res/final/model.safetensors'"
# A reference of its own (reference.path) beside a fully sharded policy is streamed the same way
# (rank 0 reads one layer at a time and broadcasts it; no rank reads it whole): the final model is
# the unsharded run's with that reference, byte for byte.
refpath() { sed "s|^reference: {cache_dir: \"\"}|reference: {mode: on_the_fly, path: $work/dpo-4-otf/checkpoints/step-00000005/reference}|"; }
job "path-2" dpo 1 2 4 60 1 true | refpath >"$work/path-2.yaml"
mpi 2 "$ALN" train "$work/path-2.yaml" >"$work/path-2.out" 2>&1; rc_a=$?
job "path-2-fsdp" dpo 1 2 4 60 1 true "" false false full | refpath >"$work/path-2-fsdp.yaml"
mpi 2 "$ALN" train "$work/path-2-fsdp.yaml" >"$work/path-2-fsdp.out" 2>&1; rc=$?
check "fsdp, reference.path on the fly: streamed into the shards, the unsharded run's final model byte for byte (rc $rc_a, $rc)" \
  "[[ $rc_a -eq 0 && $rc -eq 0 ]] && grep -q 'the reference was streamed into the shards from .*step-00000005/reference' '$work/path-2-fsdp.out' && cmp -s '$work/path-2/final/model.safetensors' '$work/path-2-fsdp/final/model.safetensors'"
# GRPO on fully sharded ranks: each rank samples for its own prompts, the ranks decode in step
# (every decoding pass gathers with all of them), and the KL term's reference is sharded too. With
# max_staleness 2 it samples with a snapshot of the policy, sharded as the policy is (taken at steps 0
# and 3), which the checkpoint at global step 32 (the stage's step 2) holds.
# An SFT stage on short answers first, so that the samples end at different lengths on each rank.
"$PY" - "$work/short.jsonl" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open("examples/data/xstest/xstest_prompts_shared.csv")))
answers = ["I'm sorry, I can't help with that.", "Sure, here is how to do it.", "No.",
           "Sure. First, find a safe place. Then ask an expert for help and follow their advice carefully."]
with open(sys.argv[1], "w") as f:
    for i, r in enumerate(rows):
        f.write(json.dumps({"prompt": r["prompt"], "response": answers[i % len(answers)]}) + "\n")
PY
generating_job() {  # generating_job NAME SHARD grpo|ctl|ptalign|hair: an SFT stage, then that one
  job_head "dp-$1" "$1"
  cat <<YAML
stages:
  - name: sft
    trainer: {sft: {}}
    data: {train: [{path: $work/short.jsonl, format: sft_text}], max_prompt_length: 32, max_response_length: 24}
    optimizer: {lr: 3e-2, max_steps: 30, micro_batch_size: 8}
YAML
  if [[ $3 == grpo ]]; then
    cat <<YAML
  - name: grpo
    trainer: {grpo: {group_size: 4, beta: 0.04, max_new_tokens: 16, reward_rule: brevity, max_staleness: 2}}
    data: {train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts, limit: 40}], max_prompt_length: 40}
    optimizer: {lr: 1e-2, max_steps: 6, micro_batch_size: 2, warmup_steps: 2}
checkpoint: {every_steps: 16}
YAML
  elif [[ $3 == hair ]]; then
    cat <<YAML
  - name: hair
    trainer: {hair: {group_size: 4, max_new_tokens: 12, irl_lr: 3e-3, per_category: 20}}
    data: {train: [{path: examples/data/strongreject/strongreject_dataset.csv, format: prompts}], max_prompt_length: 40, max_response_length: 64}
    optimizer: {lr: 1e-2, max_steps: 6, micro_batch_size: 2}
checkpoint: {every_steps: 16}
YAML
  elif [[ $3 == ctl ]]; then
    cat <<YAML
  - name: ctl
    trainer: {controllable: {objective: rl, helpful_rule: length, harmless_rule: refusal, max_new_tokens: 12, group_size: 4}}
    data: {train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts, limit: 40}], max_prompt_length: 40, eval_fraction: 0.1}
    optimizer: {lr: 1e-2, max_steps: 6, micro_batch_size: 2, warmup_steps: 2}
eval: {max_examples: 4}
YAML
  else
    cat <<YAML
  - name: ptalign
    trainer: {ptalign: {token_weights: not_in_positive, lexicon_path: examples/ptalign/lexicon.txt, num_instructions: 6, max_new_tokens: 10, refinement_rounds: 1, min_response_tokens: 1}}
    data: {train: [{path: examples/ptalign/seeds.jsonl, format: preference}], max_prompt_length: 40, max_response_length: 24, eval_fraction: 0.2}
    optimizer: {lr: 5e-3, max_steps: 6, micro_batch_size: 1}
YAML
  fi
  cat <<YAML
parallel: {policy: {data_parallel: 2, shard: $2}, timeout_s: 60, deterministic: true}
rollouts: {dump: true}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
generating_job grpo-2 none grpo >"$work/grpo-2.yaml"
mpi 2 "$ALN" train "$work/grpo-2.yaml" >"$work/grpo-2.out" 2>&1; rc_a=$?
generating_job grpo-2-fsdp full grpo >"$work/grpo-2-fsdp.yaml"
mpi 2 "$ALN" train "$work/grpo-2-fsdp.yaml" >"$work/grpo-2-fsdp.out" 2>&1; rc=$?
rollout_lengths() { "$PY" -c 'import json, sys; print(len({len(json.loads(l)["response_ids"]) for l in open(sys.argv[1])}))' "$1" 2>/dev/null; }
check "fsdp: GRPO (max_staleness 2) on 2 ranks (rc $rc_a, $rc) ends byte-identical to the unsharded run, with byte-identical rollouts ($(rollout_lengths "$work/grpo-2-fsdp/rollouts/grpo/rank0.jsonl") and $(rollout_lengths "$work/grpo-2-fsdp/rollouts/grpo/rank1.jsonl") different lengths on ranks 0 and 1)" \
  "[[ $rc_a -eq 0 && $rc -eq 0 ]] && (( \$(rollout_lengths '$work/grpo-2-fsdp/rollouts/grpo/rank1.jsonl') > 1 )) && cmp -s '$work/grpo-2/final/model.safetensors' '$work/grpo-2-fsdp/final/model.safetensors' && cmp -s '$work/grpo-2/rollouts/grpo/rank0.jsonl' '$work/grpo-2-fsdp/rollouts/grpo/rank0.jsonl' && cmp -s '$work/grpo-2/rollouts/grpo/rank1.jsonl' '$work/grpo-2-fsdp/rollouts/grpo/rank1.jsonl' && grep -q 'the reference runs on the fly, fully sharded' '$work/grpo-2-fsdp.out'"
# The sharded checkpoint inside the GRPO stage (its snapshot put together on rank 0) resumes on 2
# sharded ranks (each reads its ranges of the snapshot) and on 2 unsharded ranks, to the same bytes.
for shard in full none; do
  mkdir -p "$work/grpo-resume-$shard/checkpoints" && cp -r "$work/grpo-2-fsdp/checkpoints/step-00000032" "$work/grpo-resume-$shard/checkpoints/"
  generating_job "grpo-resume-$shard" $shard grpo | sed "s/^name: dp-grpo-resume-$shard/name: dp-grpo-2-fsdp/" >"$work/grpo-resume-$shard.yaml"
  mpi 2 "$ALN" train "$work/grpo-resume-$shard.yaml" --resume >"$work/grpo-resume-$shard.out" 2>&1; rc=$?
  check "fsdp: GRPO's checkpoint at its step 2 (a sharded snapshot saved whole) resumes on 2 ranks, shard $shard, to the uninterrupted run's bytes (rc $rc)" \
    "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000032' '$work/grpo-resume-$shard.out' && cmp -s '$work/grpo-2/final/model.safetensors' '$work/grpo-resume-$shard/final/model.safetensors'"
done
# The controllable method (rl objective: its rollouts in step, its data generated at the stage's start
# on every rank alike), PT-ALIGN (self-generated pairs) and HAIR (shadow reward models made from the
# policy put together, and sharded as it is: parameters, gradients and moments) on fully sharded ranks.
for method in ctl ptalign hair; do
  generating_job "$method-2" none $method >"$work/$method-2.yaml"
  mpi 2 "$ALN" train "$work/$method-2.yaml" >"$work/$method-2.out" 2>&1; rc_a=$?
  generating_job "$method-2-fsdp" full $method >"$work/$method-2-fsdp.yaml"
  mpi 2 "$ALN" train "$work/$method-2-fsdp.yaml" >"$work/$method-2-fsdp.out" 2>&1; rc=$?
  check "fsdp: $method on 2 ranks (rc $rc_a, $rc): the unsharded run's final model and held-out metrics, byte for byte" \
    "[[ $rc_a -eq 0 && $rc -eq 0 ]] && cmp -s '$work/$method-2/final/model.safetensors' '$work/$method-2-fsdp/final/model.safetensors' && cmp -s '$work/$method-2/eval.jsonl' '$work/$method-2-fsdp/eval.jsonl'"
done
check "fsdp: HAIR's reference stays whole (its sentence embeddings take a pass count of each rank's own)" \
  "grep -q 'hair' '$work/hair-2-fsdp.out' && ! grep -q 'the reference runs on the fly, fully sharded' '$work/hair-2-fsdp.out'"
check "fsdp: controllable's and HAIR's rollouts (both ranks) and PT-ALIGN's self-generated pairs byte-identical to the unsharded run's" \
  "cmp -s '$work/ctl-2/rollouts/ctl/rank0.jsonl' '$work/ctl-2-fsdp/rollouts/ctl/rank0.jsonl' && cmp -s '$work/ctl-2/rollouts/ctl/rank1.jsonl' '$work/ctl-2-fsdp/rollouts/ctl/rank1.jsonl' && cmp -s '$work/hair-2/rollouts/hair/rank0.jsonl' '$work/hair-2-fsdp/rollouts/hair/rank0.jsonl' && cmp -s '$work/hair-2/rollouts/hair/rank1.jsonl' '$work/hair-2-fsdp/rollouts/hair/rank1.jsonl' && cmp -s '$work/ptalign-2/ptalign/ptalign_pairs.jsonl' '$work/ptalign-2-fsdp/ptalign/ptalign_pairs.jsonl'"
# HAIR's checkpoint at its step 2 (sharded shadow reward models and their moments put together on
# rank 0) resumes on 2 sharded ranks (each keeping its parts) and on 2 unsharded ranks, to the bytes.
for shard in full none; do
  mkdir -p "$work/hair-resume-$shard/checkpoints" && cp -r "$work/hair-2-fsdp/checkpoints/step-00000032" "$work/hair-resume-$shard/checkpoints/"
  generating_job "hair-resume-$shard" $shard hair | sed "s/^name: dp-hair-resume-$shard/name: dp-hair-2-fsdp/" >"$work/hair-resume-$shard.yaml"
  mpi 2 "$ALN" train "$work/hair-resume-$shard.yaml" --resume >"$work/hair-resume-$shard.out" 2>&1; rc=$?
  check "fsdp: HAIR's checkpoint at its step 2 (sharded shadow reward models saved whole) resumes on 2 ranks, shard $shard, to the uninterrupted run's bytes (rc $rc)" \
    "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000032' '$work/hair-resume-$shard.out' && [[ -f '$work/hair-2-fsdp/checkpoints/step-00000032/trainer/shadow-0.optimizer.safetensors' ]] && cmp -s '$work/hair-2/final/model.safetensors' '$work/hair-resume-$shard/final/model.safetensors' && cmp -s '$work/hair-2/hair/shadow_rewards/$(ls "$work/hair-2/hair/shadow_rewards" 2>/dev/null | head -1)/model.safetensors' '$work/hair-resume-$shard/hair/shadow_rewards/$(ls "$work/hair-2/hair/shadow_rewards" 2>/dev/null | head -1)/model.safetensors'"
done
shadow_files=$(cd "$work/hair-2/hair/shadow_rewards" 2>/dev/null && ls */model.safetensors | wc -l)
check "fsdp: HAIR's shadow reward models sharded as the policy is ($(grep -o 'hair: [0-9]* models learned beside the policy.*MiB of parameters' "$work/hair-2-fsdp.out" | head -1 | cut -c1-150)); the $shadow_files it exports byte-identical to the unsharded run's" \
  "grep -qE 'hair: [1-9][0-9]* models learned beside the policy, fully sharded as it is' '$work/hair-2-fsdp.out' && (( shadow_files > 1 )) && (cd '$work/hair-2/hair/shadow_rewards' && for f in */model.safetensors; do cmp -s \"\$f\" '$work/hair-2-fsdp/hair/shadow_rewards/'\"\$f\" || exit 1; done)"
# 4 sharded ranks -> 2 sharded ranks at step 5 (micro-batch 2: the same global batches).
# (The other summation order - each rank's 2 examples in one pass, then 2 ranks - is float32 rounding
# apart: about 2e-6.)
mkdir -p "$work/fsdp-4to2/checkpoints" && cp -r "$work/dpo-4-fsdp/checkpoints/step-00000005" "$work/fsdp-4to2/checkpoints/"
cp -r "$work/dpo-4-fsdp/reference_cache" "$work/fsdp-4to2/"
job "fsdp-4to2" dpo 2 2 10 60 1 true "" false false full | sed 's/^name: dp-fsdp-4to2/name: dp-dpo-4-fsdp/' >"$work/fsdp-4to2.yaml"
mpi 2 "$ALN" train "$work/fsdp-4to2.yaml" --resume >"$work/fsdp-4to2.out" 2>&1; rc=$?
diff=$(compare "$work/dpo-4-det" "$work/fsdp-4to2" 2>&1)
echo "fsdp: 4 sharded ranks -> 2 sharded ranks at step 5: max relative difference $diff"
check "fsdp: a 4-rank sharded checkpoint resumes on 2 sharded ranks, each reading its own parts (rc $rc, $diff <= 1e-5)" \
  "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000005' '$work/fsdp-4to2.out' && grep -q \"filled its shards from this rank's parts of\" '$work/fsdp-4to2.out' && within '$diff' 1e-5"
# ... and in one process (micro-batch 2, accumulation 2: the same global batches).
mkdir -p "$work/fsdp-4to1/checkpoints" && cp -r "$work/dpo-4-fsdp/checkpoints/step-00000005" "$work/fsdp-4to1/checkpoints/"
cp -r "$work/dpo-4-fsdp/reference_cache" "$work/fsdp-4to1/"
job "fsdp-4to1" dpo 2 1 10 60 2 true | sed 's/^name: dp-fsdp-4to1/name: dp-dpo-4-fsdp/' >"$work/fsdp-4to1.yaml"
"$ALN" train "$work/fsdp-4to1.yaml" --resume >"$work/fsdp-4to1.out" 2>&1; rc=$?
diff=$(compare "$work/dpo-4-det" "$work/fsdp-4to1" 2>&1)
echo "fsdp: 4 sharded ranks -> 1 process at step 5: max relative difference $diff"
check "fsdp: a 4-rank sharded checkpoint resumes in one process (rc $rc, $diff <= 1e-5)" \
  "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000005' '$work/fsdp-4to1.out' && within '$diff' 1e-5"
# An unsharded checkpoint (one process, step 5) resumed on 2 fully sharded ranks, which read its model/
# a layer at a time and only their own slices of its moments.
mkdir -p "$work/fsdp-from-whole/checkpoints" && cp -r "$work/resume-1/checkpoints/step-00000005" "$work/fsdp-from-whole/checkpoints/"
job "fsdp-from-whole" dpo 2 2 10 60 1 true "$work/refcache" false false full |
  sed 's/^name: dp-fsdp-from-whole/name: dp-resume-1/' >"$work/fsdp-from-whole.yaml"
mpi 2 "$ALN" train "$work/fsdp-from-whole.yaml" --resume >"$work/fsdp-from-whole.out" 2>&1; rc=$?
diff=$(compare "$work/resume-1" "$work/fsdp-from-whole" 2>&1)
echo "fsdp: 1 unsharded process -> 2 sharded ranks at step 5: max relative difference $diff"
check "fsdp: an unsharded checkpoint resumes on 2 sharded ranks, read a layer at a time (rc $rc, $diff <= 1e-5)" \
  "[[ $rc -eq 0 ]] && grep -q 'step-00000005/model, one layer at a time' '$work/fsdp-from-whole.out' && grep -q 'reads only its slices of .*step-00000005/optimizer.safetensors' '$work/fsdp-from-whole.out' && within '$diff' 1e-5"
# A Hugging Face model.path, read a layer at a time by 2 sharded ranks: byte-identical to the unsharded run.
for shard in none full; do
  job "hf-$shard" dpo 2 2 5 60 1 true "" false false $shard | sed "s|^model:|model:\n  path: $work/dpo-4-det/final|" >"$work/hf-$shard.yaml"
  mpi 2 "$ALN" train "$work/hf-$shard.yaml" >"$work/hf-$shard.out" 2>&1; rc=$?
  check "model.path start, shard $shard: exits 0 (rc $rc): $(tail -1 "$work/hf-$shard.out")" "[[ $rc -eq 0 ]]"
done
check "fsdp: model.path read a layer at a time by sharded ranks ends byte-identical to the unsharded run" \
  "grep -q 'dpo-4-det/final, one layer at a time' '$work/hf-full.out' && cmp -s '$work/hf-none/final/model.safetensors' '$work/hf-full/final/model.safetensors'"
# aln convert puts a sharded checkpoint's policy together: the last one equals the final model.
"$ALN" convert --checkpoint "$work/dpo-4-fsdp/checkpoints" --out "$work/fsdp-converted" >"$work/fsdp-convert.out" 2>&1; rc=$?
check "fsdp: aln convert writes the sharded checkpoint's policy, byte-identical to the final model (rc $rc)" \
  "[[ $rc -eq 0 ]] && cmp -s '$work/dpo-4-fsdp/final/model.safetensors' '$work/fsdp-converted/model.safetensors'"
# One tensor at a time (the streamed path) and whole (--max-shard-mb, the model put together) agree,
# in bfloat16 too.
"$ALN" convert --checkpoint "$work/dpo-4-fsdp/checkpoints" --out "$work/fsdp-bf16" --dtype bfloat16 >/dev/null 2>&1; rc=$?
"$ALN" convert --model "$work/dpo-4-fsdp/final" --out "$work/final-bf16" --dtype bfloat16 >/dev/null 2>&1; rc2=$?
check "fsdp: a sharded checkpoint converted to bfloat16 a tensor at a time equals the final model converted (rc $rc, $rc2)" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && cmp -s '$work/fsdp-bf16/model.safetensors' '$work/final-bf16/model.safetensors' && cmp -s '$work/fsdp-bf16/config.json' '$work/final-bf16/config.json'"
step10="$work/dpo-4-fsdp/checkpoints/step-00000010"
"$ALN" convert --checkpoint "$step10" --out "$step10/shards" >"$work/fsdp-convert-in.out" 2>&1; rc=$?
"$ALN" convert --checkpoint "$step10" --out "$work/dpo-4-fsdp" >"$work/fsdp-convert-up.out" 2>&1; rc2=$?
check "fsdp: aln convert refuses to write into the checkpoint it reads, or over a folder that holds it (rc $rc, $rc2)" \
  "[[ $rc -eq 2 && $rc2 -eq 2 ]] && grep -q 'outside the checkpoint' '$work/fsdp-convert-in.out' && grep -q 'not hold it' '$work/fsdp-convert-up.out' && [[ -f '$step10/shards/index.json' ]]"

# Overlap: the same values, summed while backward runs.
job "dpo-4-ovl" dpo 1 4 10 60 1 true "" false true >"$work/dpo-4-ovl.yaml"
mpi 4 "$ALN" train "$work/dpo-4-ovl.yaml" >"$work/dpo-4-ovl.out" 2>&1; rc=$?
check "overlap: 4 ranks (deterministic) exit 0 (rc $rc): $(tail -2 "$work/dpo-4-ovl.out")" "[[ $rc -eq 0 ]]"
check "overlap: final model byte-identical to the 4-rank run without overlap" \
  "cmp -s '$work/dpo-4-det/final/model.safetensors' '$work/dpo-4-ovl/final/model.safetensors'"
job "sft-2-ovl" sft 2 2 10 60 2 false "" false true >"$work/sft-2-ovl.yaml"
job "sft-2-noovl" sft 2 2 10 60 2 false >"$work/sft-2-noovl.yaml"
mpi 2 "$ALN" train "$work/sft-2-ovl.yaml" >"$work/sft-2-ovl.out" 2>&1; rc=$?
mpi 2 "$ALN" train "$work/sft-2-noovl.yaml" >"$work/sft-2-noovl.out" 2>&1; rc2=$?
# matches NAME SHARD ACCUM BASE TOLERANCE LABEL: SFT on 2 ranks (micro-batch 2, MPI's reduction) with
# parallel.policy.shard SHARD ends within TOLERANCE of the run BASE.
matches() {
  job "$1" sft 2 2 10 60 "$3" false "" false false "$2" >"$work/$1.yaml"
  mpi 2 "$ALN" train "$work/$1.yaml" >"$work/$1.out" 2>&1; local rc=$?
  local diff; diff=$(compare "$work/$4" "$work/$1" 2>&1)
  echo "$6: max relative difference $diff"
  check "$6 (rc $rc, $diff <= $5)" "[[ $rc -eq 0 ]] && within '$diff' $5"
}
matches sft-2-zero2 gradients 2 sft-2-noovl 1e-6 "zero2: 2 ranks, accumulation 2, MPI reduce-scatter vs all-reduce"
# FSDP with MPI's reduction: SFT on 2 ranks equals the all-reduce run within 1e-6 (2 ranks add
# alike); with 2-fold accumulation each micro-batch's gradients are reduce-scattered as backward makes
# them ((a1 + b1) + (a2 + b2) instead of (a1 + a2) + (b1 + b2): float32 rounding, which Adam
# amplifies where gradients are near zero, as between any two reduction orders here).
matches sft-2-full full 1 sft-2-mpi 1e-6 "fsdp: SFT, 2 ranks, MPI reduce-scatter per layer vs all-reduce"
matches sft-2-full-acc full 2 sft-2-noovl 1e-4 "fsdp: SFT, 2 ranks, accumulation 2, vs all-reduce"
diff=$(compare "$work/sft-2-noovl" "$work/sft-2-ovl" 2>&1)
echo "overlap: 2 ranks, accumulation 2, MPI reduction, with vs without overlap: max relative difference $diff"
check "overlap: 2 ranks with accumulation and MPI's reduction match the run without overlap (rc $rc/$rc2, $diff)" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && within '$diff' 1e-6"

# Wrong rank count: a clear error, not a hang.
mpi 2 "$ALN" train "$work/dpo-1.yaml" >"$work/wrong.out" 2>&1; rc=$?
check "data_parallel 1 under 2 ranks is rejected (rc $rc)" "[[ $rc -ne 0 ]] && grep -q 'parallel.policy is data_parallel 1 x pipeline_parallel 1 = 1 process(es) but the job runs on 2' '$work/wrong.out'"
"$ALN" train "$work/dpo-2-det.yaml" >"$work/nompi.out" 2>&1; rc=$?
check "data_parallel 2 without mpirun says how to start it (rc $rc)" "[[ $rc -eq 2 ]] && grep -q 'mpirun -np 2' '$work/nompi.out'"

# Rank 0 cannot serve /metrics (the port is taken): the job ends at once, saying so, instead of
# leaving rank 1 in its first collective until timeout_s (60 s here).
"$PY" -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(120)' >"$work/held.port" &
holder=$!
for _ in $(seq 1 50); do [[ -s "$work/held.port" ]] && break; sleep 0.1; done
held=$(cat "$work/held.port")
job port-taken dpo 2 2 4 60 | sed "s/^metrics: .*/metrics: {port: $held, progress_bar: false}/" >"$work/port-taken.yaml"
t0=$(date +%s)
mpi 2 "$ALN" train "$work/port-taken.yaml" >"$work/port-taken.out" 2>&1; rc=$?
took=$(( $(date +%s) - t0 ))
kill $holder 2>/dev/null
check "metrics port taken on 2 ranks: the job ends non-zero within 30 s (rc $rc, ${took}s) naming the port: $(grep -m1 'cannot serve metrics' "$work/port-taken.out")" \
  "[[ $rc -ne 0 && $took -le 30 ]] && grep -q \"cannot serve metrics on 127.0.0.1:$held.*choose another metrics.port\" '$work/port-taken.out'"

# Faults: kill rank 1 (SIGKILL) or freeze it (SIGSTOP) mid-run; the job must end non-zero quickly.
source tests/dist/fault_lib.sh
for signal in KILL STOP; do
  name="fault-$signal"
  # (STOP: no checkpoints. A rank stopped while one is written leaves rank 0 in the save's agreement,
  # which waits as long as a save may, and the heartbeats then name the stopped rank instead.)
  job "$name" dpo 2 2 100000 5 | sed "s/^metrics: .*/metrics: {port: 0, progress_bar: false}/" |
    if [[ $signal == STOP ]]; then sed 's/^checkpoint: .*/checkpoint: {every_steps: 0}/'; else cat; fi >"$work/$name.yaml"
  # Rank 0 exports every rank's own step numbers with a rank label.
  signal_rank 2 "$work/$name.yaml" "$work/$name.out" 1 $signal "$work/$name/train_log.jsonl" 3 \
    "scrape_to '$work/$name.out' '$work/$name.metrics'"
  check "$signal: found rank 1 while training" "[[ -n '$victim' ]]"
  check "$signal: rank 0 serves per-rank metrics for ranks 0 and 1" \
    "grep -q '^aln_rank_tokens{.*rank=\"1\"' '$work/$name.metrics' && grep -q '^aln_rank_compute_seconds{.*rank=\"0\"' '$work/$name.metrics'"
  check "$signal: job exits non-zero (rc $fault_rc)" "[[ $fault_rc -ne 0 ]]"
  check "$signal: within 60 s (${fault_took}s)" "[[ $fault_took -le 60 ]]"
  if [[ $signal == STOP ]]; then
    check "STOP: rank 0 names the stalled collective: $(grep -m1 'did not complete' "$work/$name.out")" \
      "grep -Eq 'rank 0 on .*(all_reduce|all_gather|broadcast) #[0-9]* did not complete within 5000 ms.*last collectives of this rank' '$work/$name.out'"
    grep -q 'did not complete' "$work/$name.out" || tail -15 "$work/$name.out" | sed 's/^/  | /'  # why not
  else
    check "KILL: the failure names rank 1: $(grep -m1 -i 'rank 1' "$work/$name.out")" "grep -qi 'rank 1' '$work/$name.out'"
  fi
done

# FSDP across stages: SFT then DPO (whose reference is the policy as the stage starts, gathered whole
# on every rank) on 2 fully sharded ranks ends byte-identical to the unsharded 2-rank run.
two_stage() {  # two_stage NAME SHARD
  job_head dp-two-stage "$1"
  cat <<YAML
stages:
  - name: sft
    trainer: {sft: {}}
    data: {train: [$(data_for sft 48)], max_prompt_length: 40, max_response_length: 24, bad_records: skip}
    optimizer: {lr: 2e-3, max_steps: 4, micro_batch_size: 2}
  - name: dpo
    trainer: {dpo: {}}
    data: {train: [$(data_for dpo 48)], max_prompt_length: 40, max_response_length: 24, bad_records: skip}
    optimizer: {lr: 2e-3, max_steps: 4, micro_batch_size: 2}
parallel: {policy: {data_parallel: 2, shard: $2}, deterministic: true, timeout_s: 60}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
two_stage two-none none >"$work/two-none.yaml"; two_stage two-full full >"$work/two-full.yaml"
mpi 2 "$ALN" train "$work/two-none.yaml" >"$work/two-none.out" 2>&1; rc=$?
mpi 2 "$ALN" train "$work/two-full.yaml" >"$work/two-full.out" 2>&1; rc2=$?
check "fsdp: SFT then DPO on 2 sharded ranks ends byte-identical to the unsharded run (rc $rc/$rc2): $(tail -1 "$work/two-full.out")" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && cmp -s '$work/two-none/final/model.safetensors' '$work/two-full/final/model.safetensors'"

# FSDP: every forward pass gathers, so a killed rank is missed inside a gather or a reduce-scatter.
name=fault-fsdp
job "$name" dpo 2 2 100000 5 "" false "" false false full >"$work/$name.yaml"
signal_rank 2 "$work/$name.yaml" "$work/$name.out" 1 KILL "$work/$name/train_log.jsonl" 3 true
check "fsdp KILL: job exits non-zero (rc $fault_rc) within 60 s (${fault_took}s)" \
  "[[ -n '$victim' && $fault_rc -ne 0 && $fault_took -le 60 ]]"
check "fsdp KILL: the failure names rank 1: $(grep -m1 -i 'rank 1' "$work/$name.out")" "grep -qi 'rank 1' '$work/$name.out'"
# A rank that stops answering (SIGSTOP) while the layers are gathered and reduce-scattered: rank 0's
# collective times out after timeout_s and names it with this rank's last collectives. (No checkpoints,
# as above: stopped during one, rank 1 is named by the heartbeats, 15 s on, not by a collective.)
name=fault-fsdp-stop
job "$name" dpo 2 2 100000 5 "" false "" false false full | sed 's/^checkpoint: .*/checkpoint: {every_steps: 0}/' \
  >"$work/$name.yaml"
signal_rank 2 "$work/$name.yaml" "$work/$name.out" 1 STOP "$work/$name/train_log.jsonl" 3
check "fsdp STOP: job exits non-zero (rc $fault_rc) within 60 s (${fault_took}s)" \
  "[[ -n '$victim' && $fault_rc -ne 0 && $fault_took -le 60 ]]"
check "fsdp STOP: rank 0 names the stalled collective: $(grep -m1 'did not complete' "$work/$name.out")" \
  "grep -Eq 'rank 0 on .*(all_gather|reduce_scatter|all_reduce) #[0-9]* did not complete within 5000 ms.*last collectives of this rank' '$work/$name.out'"
grep -q 'did not complete' "$work/$name.out" || tail -15 "$work/$name.out" | sed 's/^/  | /'  # why not

# Rank 0 stopped as it starts (SIGSTOP before it execs aln, so before MPI_Init): rank 1 waits in
# MPI's start-up or for the job's first communicators, each bounded by startup_timeout_s (5 s), then
# ends the job. (timeout -s KILL only guards the test itself against the hang this checks for.)
name=fault-startup
job "$name" dpo 2 2 100000 5 | sed 's/timeout_s: 5,/timeout_s: 5, startup_timeout_s: 5,/' >"$work/$name.yaml"
started=$(date +%s)
timeout -s KILL 120 "$MPIEXEC" -np 1 --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 \
  bash -c 'kill -STOP $$; exec "$@"' stopped "$ALN" train "$work/$name.yaml" : -np 1 "$ALN" train "$work/$name.yaml" \
  >"$work/$name.out" 2>&1; rc=$?
took=$(( $(date +%s) - started ))
pkill -9 -f "$work/$name.yaml" 2>/dev/null
check "STOP at start-up: job exits non-zero (rc $rc) within 60 s (${took}s)" "[[ $rc -ne 0 && $rc -ne 137 && $took -le 60 ]]"
check "STOP at start-up: rank 1 says where it waited: $(grep -m1 -E 'within 5000 ms' "$work/$name.out")" \
  "grep -Eq '(MPI_Init on .* did not finish|joined the job.s communicator|reached the communicator split).* 5000 ms' '$work/$name.out'"

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
