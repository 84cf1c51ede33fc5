#!/usr/bin/env bash
# Pipeline parallelism under a real mpirun (CPU, MPI send/recv between stages), a 4-layer Llama:
#  - equivalence: dpo and sft with 2 and 4 stages (1F1B and GPipe) end after 10 steps with the same
#    parameters and losses as one process on the same micro-batches (bit for bit: the stages run the
#    same operations, backward passes in micro-batch order); data_parallel 2 x pipeline 2 equals
#    data_parallel 2 alone bit for bit and one process within 1e-5 (norm-relative per tensor; the
#    ranks' gradients are added in another order); tied embeddings (first and last stage hold
#    copies whose gradients are summed) within 1e-5; an explicit stage_layers split likewise;
#  - memory: 1F1B keeps at most (stages - stage) micro-batches of activations alive per stage, GPipe
#    all of them (counted by the engine, logged per step);
#  - frozen reference: its log-probs through a 2- and 4-stage pipeline equal the unsplit ones;
#  - checkpoint: the final model of 2 stages is one sharded checkpoint (a shard per stage + index)
#    that transformers loads with logits identical to the unsplit run's, and aln generates from it
#    exactly what it generates from the unsplit one;
#  - resume: a 2-stage run killed after step 7 resumes from its step-5 checkpoint (which holds the
#    whole model and optimizer state) with 2 stages and with 1, both ending where the uninterrupted
#    run does, bit for bit;
#  - metrics: a running pipelined job serves aln_pipeline_bubble_fraction per pipeline_stage;
#  - faults: a stage killed (SIGKILL) or frozen (SIGSTOP) mid-step ends the job non-zero within 60 s
#    (the frozen case with the stalled receive and the flight recorder in the message);
#  - errors: methods that need the whole model, too many stages, a wrong stage_layers list.
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PY="$3"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh
source tests/dist/fault_lib.sh
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; pkill -9 -f "$work/" 2>/dev/null; [[ -z "${KEEP:-}" ]] && rm -rf "$work"' EXIT

job() {  # job NAME TRAINER DP PP SCHEDULE ACCUM [TIED] [EXTRA_PARALLEL] [MAX_STEPS]
  local data="{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf, limit: 96}"
  [[ $2 == sft ]] && data="{path: examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz, format: hh_rlhf, limit: 96}"
  cat <<YAML
name: pp-$1
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 4, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_position: 256, tie_embeddings: ${7:-false}}
trainer: {$2: {}}
data:
  train: [$data]
  max_prompt_length: 40
  max_response_length: 24
  bad_records: skip
optimizer: {lr: 2e-3, max_steps: ${9:-10}, micro_batch_size: 2, gradient_accumulation: $6, warmup_steps: 2}
parallel: {policy: {data_parallel: $3, pipeline_parallel: $4, schedule: $5 ${8:-}}, timeout_s: 5, deterministic: true}
reference: {cache_dir: "$work/$1/refcache"}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
train() {  # train NAME TRAINER DP PP SCHEDULE ACCUM [TIED] [EXTRA]: runs it, checks the exit code
  job "$@" >"$work/$1.yaml"
  local np=$(( $3 * $4 ))
  if [[ $np -eq 1 ]]; then "$ALN" train "$work/$1.yaml" >"$work/$1.out" 2>&1; else mpi $np "$ALN" train "$work/$1.yaml" >"$work/$1.out" 2>&1; fi
  local rc=$?
  check "$1 exits 0 (rc $rc): $(tail -2 "$work/$1.out")" "[[ $rc -eq 0 ]]"
}
compare() {  # compare RUN_A RUN_B -> "max-relative norm-relative loss-relative" over every tensor and logged loss
  "$PY" - "$work/$1" "$work/$2" <<'PY'
import glob, json, sys
import numpy as np
from safetensors.numpy import load_file
def load(d):
    out = {}
    for f in sorted(glob.glob(d + "/final/*.safetensors")): out.update(load_file(f))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys(): print("names-differ names-differ names-differ"); sys.exit()
mx = nr = 0.0
for k in a:
    x, y = a[k].astype("float64"), b[k].astype("float64")
    mx = max(mx, float(abs(x - y).max()) / max(float(abs(x).max()), 1e-12))
    nr = max(nr, float(np.linalg.norm(x - y)) / max(float(np.linalg.norm(x)), 1e-12))
la = [json.loads(l)["loss"] for l in open(sys.argv[1] + "/train_log.jsonl")]
lb = [json.loads(l)["loss"] for l in open(sys.argv[2] + "/train_log.jsonl")]
lr = max(abs(x - y) / abs(x) for x, y in zip(la, lb)) if len(la) == len(lb) == 10 else 1.0
print(f"{mx:.3e} {nr:.3e} {lr:.3e}")
PY
}
within() { "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$1" "$2"; }
expect_same() {  # expect_same A B: bit for bit
  read -r mx nr lr <<<"$(compare "$1" "$2")"
  echo "$2 vs $1: max-relative $mx, norm-relative $nr, losses $lr"
  check "$2 equals $1 bit for bit (max-relative $mx, losses $lr)" "[[ $mx == 0.000e+00 && $lr == 0.000e+00 ]]"
}
expect_close() {  # expect_close A B: within 1e-5
  read -r mx nr lr <<<"$(compare "$1" "$2")"
  echo "$2 vs $1: max-relative $mx, norm-relative $nr, losses $lr"
  check "$2 within 1e-5 of $1 (norm-relative $nr, losses $lr)" "within $nr 1e-5 && within $lr 1e-5"
}

# Equivalence.
for trainer in dpo sft; do
  train $trainer-1 $trainer 1 1 one_f_one_b 4
  train $trainer-p2 $trainer 1 2 one_f_one_b 4
  train $trainer-p4 $trainer 1 4 one_f_one_b 4
  train $trainer-p2-gpipe $trainer 1 2 gpipe 4
  for run in p2 p4 p2-gpipe; do expect_same $trainer-1 $trainer-$run; done
done
train dpo-d2 dpo 2 1 one_f_one_b 2
train dpo-d2p2 dpo 2 2 one_f_one_b 2
expect_same dpo-d2 dpo-d2p2
expect_close dpo-1 dpo-d2p2
train tied-1 dpo 1 1 one_f_one_b 4 true
train tied-p3 dpo 1 3 gpipe 4 true
expect_close tied-1 tied-p3
train dpo-p2-explicit dpo 1 2 one_f_one_b 4 false ", stage_layers: [1, 3]"
expect_same dpo-1 dpo-p2-explicit
check "the explicit split is used: $(grep -o 'pipeline: .*' "$work/dpo-p2-explicit.out" | head -1)" \
  "grep -q 'layers \[0, 1) \[1, 4)' '$work/dpo-p2-explicit.out'"
check "the balanced split of 4 stages is one layer each" "grep -q 'layers \[0, 1) \[1, 2) \[2, 3) \[3, 4)' '$work/dpo-p4.out'"

# Starting from a Hugging Face directory, each stage reads only its own tensors (here from the
# 2-stage run's sharded checkpoint) and training matches one process started from the same directory.
from_path() { sed "s|^output_dir: .*|output_dir: $work/$1|; s|^  config: .*|  path: $work/dpo-p2/final|; s|/$2/refcache|/$1/refcache|" "$work/$2.yaml"; }
from_path path-1 dpo-1 >"$work/path-1.yaml"; "$ALN" train "$work/path-1.yaml" >"$work/path-1.out" 2>&1
from_path path-p2 dpo-p2 >"$work/path-p2.yaml"; mpi 2 "$ALN" train "$work/path-p2.yaml" >"$work/path-p2.out" 2>&1
check "stage 0 read only its 19 tensors (embedding, layers 0-1) from the sharded checkpoint: $(grep -o 'pipeline stage 0: read .*' "$work/path-p2.out" | head -1)" \
  "grep -q 'pipeline stage 0: read 19 tensors (layers \[0, 2))' '$work/path-p2.out'"
expect_same path-1 path-p2

# Activations alive per stage (the engine's counter), and the logged bubble numbers.
alive() { "$PY" -c 'import json, sys; print(" ".join(str(max(json.loads(l)["pipeline"]["max_alive"][s] for l in open(sys.argv[1]))) for s in range(int(sys.argv[2]))))' "$work/$1/train_log.jsonl" "$2"; }
check "1F1B, 4 stages, 4 micro-batches: at most 4 3 2 1 alive ($(alive dpo-p4 4))" "[[ '$(alive dpo-p4 4)' == '4 3 2 1' ]]"
check "GPipe, 2 stages, 4 micro-batches: 4 alive on each ($(alive dpo-p2-gpipe 2))" "[[ '$(alive dpo-p2-gpipe 2)' == '4 4' ]]"
check "1F1B, 2 stages: 2 1 alive ($(alive dpo-p2 2))" "[[ '$(alive dpo-p2 2)' == '2 1' ]]"
check "one device-to-host read per step with 4 stages (the last stage's, handed to the others)" \
  "! grep -v '\"host_reads\":1,' '$work/dpo-p4/train_log.jsonl' | grep -q ."
check "step lines carry the bubble and the theoretical (p-1)/(m+p-1)" \
  "tail -1 '$work/dpo-p4/train_log.jsonl' | grep -q '\"theoretical_bubble\":0.42857142857142' && tail -1 '$work/dpo-p4/train_log.jsonl' | grep -q '\"bubble\":\['"

# The frozen reference through the pipeline.
refs_equal() { "$PY" - "$work/$1/refcache" "$work/$2/refcache" <<'PY'
import glob, sys
from safetensors.numpy import load_file
a, b = (load_file(glob.glob(d + "/*.safetensors")[0]) for d in sys.argv[1:3])
sys.exit(0 if a.keys() == b.keys() and all((a[k] == b[k]).all() and len(a[k]) > 0 for k in a) else 1)
PY
}
check "reference log-probs of 2 stages equal the unsplit ones" "refs_equal dpo-1 dpo-p2"
check "reference log-probs of 4 stages equal the unsplit ones" "refs_equal dpo-1 dpo-p4"

# The checkpoint of 2 stages: sharded, loadable by transformers (identical logits) and by aln.
check "the 2-stage final model is a shard per stage plus the index" \
  "[[ -f '$work/dpo-p2/final/model-00001-of-00002.safetensors' && -f '$work/dpo-p2/final/model-00002-of-00002.safetensors' && -f '$work/dpo-p2/final/model.safetensors.index.json' ]]"
"$PY" - "$work/dpo-1/final" "$work/dpo-p2/final" >"$work/hf.out" 2>&1 <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
ids = torch.tensor([[50256, 464, 3290, 318, 257, 1332, 13], [50256, 50256, 40, 588, 340, 13, 198]])
mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
logits = []
for d in sys.argv[1:3]:
    model, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad(): logits.append(model(input_ids=ids, attention_mask=mask).logits)
print("max difference", float((logits[0] - logits[1]).abs().max()))
sys.exit(0 if torch.equal(logits[0], logits[1]) else 1)
PY
rc=$?
check "transformers loads the 2-stage checkpoint, logits identical to the unsplit run's ($(tail -1 "$work/hf.out"))" "[[ $rc -eq 0 ]]"
gen() { "$ALN" generate --model "$work/$1/final" --tokenizer examples/data/tokenizers/gpt2/tokenizer.json \
  --prompt "How do I bake bread?" --max-new-tokens 12 2>/dev/null; }
check "aln generates the same from the 2-stage checkpoint as from the unsplit one" \
  "[[ -n \"\$(gen dpo-p2)\" && \"\$(gen dpo-p2)\" == \"\$(gen dpo-1)\" ]]"

# Checkpoints and resume with the same or another pipeline size.
job ck dpo 1 2 one_f_one_b 4 | sed 's/^metrics:/checkpoint: {every_steps: 5}\nmetrics:/' >"$work/ck.yaml"
kill_at_step 2 "$work/ck.yaml" "$work/ck/train_log.jsonl" 7
check "the 2-stage run was killed after a checkpoint ($(ls "$work/ck/checkpoints" 2>/dev/null | tr '\n' ' '))" \
  "[[ -d '$work/ck/checkpoints/step-00000005' && ! -d '$work/ck/final' ]]"
cp -r "$work/ck" "$work/ck1"
sed "s|^output_dir: .*|output_dir: $work/ck1|; s/pipeline_parallel: 2/pipeline_parallel: 1/" "$work/ck.yaml" >"$work/ck1.yaml"
mpi 2 "$ALN" train "$work/ck.yaml" --resume >"$work/ck.out" 2>&1; rc=$?
check "resumed with 2 stages (rc $rc)" "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000005' '$work/ck.out'"
"$ALN" train "$work/ck1.yaml" --resume >"$work/ck1.out" 2>&1; rc=$?
check "resumed with 1 stage (rc $rc)" "[[ $rc -eq 0 ]] && grep -q 'resuming from .*step-00000005' '$work/ck1.out'"
for run in ck ck1; do
  # train_log.jsonl keeps the killed run's lines up to the checkpoint, then the resumed ones.
  expect_same dpo-p2 $run
done

# Faults: kill or freeze the last stage mid-run; a running job first shows per-stage metrics.
for signal in KILL STOP; do
  name="fault-$signal"
  job "$name" dpo 1 2 one_f_one_b 4 false "" 100000 | sed "s/^metrics: .*/metrics: {port: 0, progress_bar: false}/" >"$work/$name.yaml"
  signal_rank 2 "$work/$name.yaml" "$work/$name.out" 1 $signal "$work/$name/train_log.jsonl" 3 \
    "scrape_to '$work/$name.out' '$work/$name.metrics'"
  check "$signal: found stage 1 while training" "[[ -n '$victim' ]]"
  check "$signal: rank 0 serves the bubble of both stages" \
    "grep -q '^aln_pipeline_bubble_fraction{.*pipeline_stage=\"1\"' '$work/$name.metrics' && grep -q '^aln_pipeline_activations_alive_max{.*pipeline_stage=\"0\"' '$work/$name.metrics'"
  check "$signal: job exits non-zero (rc $fault_rc)" "[[ $fault_rc -ne 0 ]]"
  check "$signal: within 60 s (${fault_took}s)" "[[ $fault_took -le 60 ]]"
  if [[ $signal == STOP ]]; then
    check "STOP: stage 0 names the stalled exchange: $(grep -m1 'did not complete' "$work/$name.out" | cut -c1-160)" \
      "grep -Eq 'rank 0 on .*(recv from 1|send to 1|broadcast|all_reduce|all_gather).* did not complete within 5000 ms.*last collectives of this rank' '$work/$name.out'"
  else
    check "KILL: the failure names rank 1: $(grep -m1 -i 'rank 1' "$work/$name.out")" "grep -qi 'rank 1' '$work/$name.out'"
  fi
done

# Clear errors.
job bad-method dpo 1 2 one_f_one_b 2 | sed 's/^trainer: .*/trainer: {grpo: {}}/' >"$work/bad-method.yaml"
mpi 2 "$ALN" train "$work/bad-method.yaml" >"$work/bad-method.out" 2>&1; rc=$?
check "grpo on pipeline stages is refused naming the key (rc $rc)" \
  "[[ $rc -ne 0 ]] && grep -q 'trainer: grpo does not run on pipeline stages yet' '$work/bad-method.out'"
job too-many dpo 1 8 one_f_one_b 2 >"$work/too-many.yaml"
mpi 8 "$ALN" train "$work/too-many.yaml" >"$work/too-many.out" 2>&1; rc=$?
check "8 stages for 4 layers are refused (rc $rc)" "[[ $rc -ne 0 ]] && grep -q 'use at most 4 stages' '$work/too-many.out'"
job bad-split dpo 1 2 one_f_one_b 2 false ", stage_layers: [1, 2]" >"$work/bad-split.yaml"
mpi 2 "$ALN" train "$work/bad-split.yaml" >"$work/bad-split.out" 2>&1; rc=$?
check "a stage_layers list that does not add up is refused (rc $rc)" \
  "[[ $rc -ne 0 ]] && grep -q 'parallel.policy.stage_layers: the stages hold 3 layers but the model has 4' '$work/bad-split.out'"
job wrong-np dpo 2 2 one_f_one_b 2 >"$work/wrong-np.yaml"
mpi 2 "$ALN" train "$work/wrong-np.yaml" >"$work/wrong-np.out" 2>&1; rc=$?
check "2 x 2 on 2 processes says how to start it (rc $rc)" "[[ $rc -ne 0 ]] && grep -q 'mpirun -np 4' '$work/wrong-np.out'"

summary
