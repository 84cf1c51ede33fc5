#!/usr/bin/env bash
# Role placement under a real mpirun: the reference on its own ranks (parallel.placement: separate).
#  - DPO on 2 policy ranks with the reference on 1 and on 2 further ranks ends bit for bit where the
#    colocated run does (the reference ranks compute the same micro-batch chunks; the sums reach
#    the policy ranks as one number plus zeros);
#  - a two-stage job (SFT, then DPO whose reference is the policy after SFT: the weights are sent to
#    the reference ranks) and a reference given by path equal their colocated runs;
#  - a second run finds the reference cache and the reference ranks compute nothing;
#  - TDPO and Ra-DPO (reference needed every step) with the reference's body on its own rank equal
#    their colocated runs; so do controllable (contrastive; RL with its KL term) and HAIR with a
#    sentence encoder of its own, whose reference rank answers per-token log-prob requests, and HAIR
#    with the reference as its sentence encoder (the reference rank also embeds sentences);
#  - SFT then DPO on a 2-stage pipelined policy with the reference on its own rank equals the
#    colocated pipelined run (rank 0 gathers the whole policy and sends it); so do SFT then DPO,
#    TDPO and controllable (rl) on a fully sharded policy (rank 0 puts it together from the shards)
#    equal their colocated sharded runs (controllable also the unsharded one);
#  - the layout check: wrong process counts, a job without a reference stage, a pipelined
#    reference are refused before anything loads, saying what would fit;
#  - a reference rank killed or frozen mid-run ends the job non-zero within 60 s (the frozen one is
#    found by rank 0's heartbeat monitor, which also serves every rank's metrics).
set -uo pipefail
ALN="$1"; MPIEXEC="$2"; PY="$3"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; pkill -9 -f "$work/" 2>/dev/null; [[ -z "${KEEP:-}" ]] && rm -rf "$work"' EXIT

job() {  # job NAME PLACEMENT REFERENCE_RANKS [TWO_STAGES] [REFERENCE_PATH] [CACHE_DIR]
  cat <<YAML
name: placement
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_position: 256}
YAML
  local dpo_stage="{name: dpo, trainer: {dpo: {}}, data: {train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf, limit: 96}], max_prompt_length: 40, max_response_length: 24, bad_records: skip}, optimizer: {lr: 2e-3, max_steps: 10, micro_batch_size: 2, gradient_accumulation: 2, warmup_steps: 2}, reference: {cache_dir: \"${6:-$work/$1/refcache}\", path: \"${5:-}\"}}"
  if [[ -n "${4:-}" ]]; then
    echo "stages:"
    echo "  - {name: sft, trainer: {sft: {}}, data: {train: [{path: examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz, format: hh_rlhf, limit: 48}], max_prompt_length: 40, max_response_length: 24, bad_records: skip}, optimizer: {lr: 2e-3, max_steps: 4, micro_batch_size: 2}}"
    echo "  - $dpo_stage"
  else
    echo "stages:"
    echo "  - $dpo_stage"
  fi
  cat <<YAML
parallel: {policy: {data_parallel: 2}, placement: $2, reference: {data_parallel: $3}, timeout_s: 10, deterministic: true}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
train() {  # train NAME NP PLACEMENT REFERENCE_RANKS [TWO_STAGES] [REFERENCE_PATH] [CACHE_DIR]
  job "$1" "${@:3}" >"$work/$1.yaml"
  mpi "$2" "$ALN" train "$work/$1.yaml" >"$work/$1.out" 2>&1
  local rc=$?
  check "$1 exits 0 (rc $rc): $(tail -2 "$work/$1.out")" "[[ $rc -eq 0 ]]"
}
same() {  # same RUN_A RUN_B: identical final tensors and logged losses
  "$PY" - "$work/$1" "$work/$2" <<'PY'
import json, sys
from safetensors.numpy import load_file
import glob
# Every shard of the final model (a pipeline writes one per stage).
a, b = ({k: v for f in sorted(glob.glob(d + "/final/*.safetensors")) for k, v in load_file(f).items()}
        for d in sys.argv[1:3])
la, lb = ([json.loads(l)["loss"] for l in open(d + "/train_log.jsonl")] for d in sys.argv[1:3])
sys.exit(0 if a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a) and la == lb and len(la) >= 10 else 1)
PY
}

train colocated 2 colocated 1
train separate 3 separate 1
train separate2 4 separate 2
check "reference on 1 separate rank: same parameters and losses as colocated" "same colocated separate"
check "reference on 2 separate ranks: same parameters and losses as colocated" "same colocated separate2"
check "the policy logs where the reference runs" "grep -q 'placement separate: the reference runs on world ranks 2..3' '$work/separate2.out'"
check "the reference ranks computed the cache" "grep -q 'computed on the reference ranks' '$work/separate.out'"

train two-colocated 2 colocated 1 yes
train two-separate 3 separate 1 yes
check "SFT then DPO (reference = the policy after SFT, sent to the reference rank): same as colocated" \
  "same two-colocated two-separate"

# Beside a fully sharded policy (shard: full), rank 0 puts the policy together from the ranks' shards
# to send it (after SFT); the reference rank computes the cache. The colocated sharded run's bits.
# (Not the unsharded run's: with gradient accumulation a sharded rank sums its micro-batches' reduced
# shards, the unsharded one its micro-batches' gradients before the sum, which differ in the last bit.)
fsdp() { sed 's/policy: {data_parallel: 2}/policy: {data_parallel: 2, shard: full}/'; }
fsdp_pair() {  # fsdp_pair NAME JOB_ARGS...: NAME-colocated-fsdp (2 ranks) and NAME-separate-fsdp (3 ranks)
  local name="$1"; shift
  job "$name-colocated-fsdp" colocated "$@" | fsdp >"$work/$name-colocated-fsdp.yaml"
  job "$name-separate-fsdp" separate "$@" | fsdp >"$work/$name-separate-fsdp.yaml"
}
fsdp_pair two 1 yes
mpi 2 "$ALN" train "$work/two-colocated-fsdp.yaml" >"$work/two-colocated-fsdp.out" 2>&1; rc=$?
mpi 3 "$ALN" train "$work/two-separate-fsdp.yaml" >"$work/two-separate-fsdp.out" 2>&1; rc2=$?
check "SFT then DPO on 2 fully sharded ranks, reference on its own rank (rc $rc, $rc2): same as colocated" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && grep -q 'computed on the reference ranks' '$work/two-separate-fsdp.out' && same two-colocated-fsdp two-separate-fsdp"

train path-colocated 2 colocated 1 "" "$work/colocated/final"
train path-separate 3 separate 1 "" "$work/colocated/final"
check "a reference given by path, loaded by the reference rank: same as colocated" "same path-colocated path-separate"

train reuse 3 separate 1 "" "" "$work/separate/refcache"
check "a second run reuses the cache (the reference rank computes nothing)" \
  "grep -q 'reference log-probs: reused' '$work/reuse.out' && ! grep -q 'computed on the reference ranks' '$work/reuse.out' && same separate reuse"

# TDPO and Ra-DPO need the reference every step (full distributions): the reference rank runs its
# body and sends the final hidden states; the policy ranks keep its output projection and form the
# distributions. Same parameters and losses as colocated, with the policy as the reference and
# with a reference given by path (the projection then read with the last layer from that path).
token_level() {  # token_level NAME NP PLACEMENT METHOD [REFERENCE_PATH]
  job "$1" "$3" 1 "" "${5:-}" | sed "s/trainer: {dpo: {}}/trainer: {$4: {}}/" >"$work/$1.yaml"
  mpi "$2" "$ALN" train "$work/$1.yaml" >"$work/$1.out" 2>&1
  local rc=$?
  check "$1 exits 0 (rc $rc): $(tail -2 "$work/$1.out")" "[[ $rc -eq 0 ]]"
}
token_level tdpo-colocated 2 colocated tdpo
token_level tdpo-separate 3 separate tdpo
check "TDPO, reference body on its own rank: same parameters and losses as colocated" "same tdpo-colocated tdpo-separate"
check "the reference rank answered hidden-state requests" \
  "grep -q 'stage dpo: the reference ranks answer the per-token hidden-state requests' '$work/tdpo-separate.out'"
fsdp_pair tdpo 1
sed -i "s/trainer: {dpo: {}}/trainer: {tdpo: {}}/" "$work/tdpo-colocated-fsdp.yaml" "$work/tdpo-separate-fsdp.yaml"
mpi 2 "$ALN" train "$work/tdpo-colocated-fsdp.yaml" >"$work/tdpo-colocated-fsdp.out" 2>&1; rc=$?
mpi 3 "$ALN" train "$work/tdpo-separate-fsdp.yaml" >"$work/tdpo-separate-fsdp.out" 2>&1; rc2=$?
check "TDPO on 2 fully sharded ranks, reference body on its own rank (rc $rc, $rc2): same as colocated" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && same tdpo-colocated-fsdp tdpo-separate-fsdp"
token_level radpo-path-colocated 2 colocated radpo "$work/colocated/final"
token_level radpo-path-separate 3 separate radpo "$work/colocated/final"
check "Ra-DPO with a reference by path on its own rank: same as colocated" "same radpo-path-colocated radpo-path-separate"

# A pipelined policy (2 stages) with the reference on its own rank: world rank 0 gathers the whole
# policy after SFT from its stages and sends it; the same as the colocated pipelined run.
job piped-colocated colocated 1 yes | sed 's/policy: {data_parallel: 2}/policy: {pipeline_parallel: 2}/' \
  >"$work/piped-colocated.yaml"
mpi 2 "$ALN" train "$work/piped-colocated.yaml" >"$work/piped-colocated.out" 2>&1; rc=$?
job piped-separate separate 1 yes | sed 's/policy: {data_parallel: 2}/policy: {pipeline_parallel: 2}/' \
  >"$work/piped-separate.yaml"
mpi 3 "$ALN" train "$work/piped-separate.yaml" >"$work/piped-separate.out" 2>&1; rc2=$?
check "SFT then DPO on 2 pipeline stages, reference on its own rank (rc $rc, $rc2): same as colocated" \
  "[[ $rc -eq 0 && $rc2 -eq 0 ]] && grep -q 'computed on the reference ranks' '$work/piped-separate.out' && same piped-colocated piped-separate"

# Controllable (contrastive pairs; RL with its KL term) and HAIR with a sentence encoder of its own
# use only the reference's per-token log-probs of given sequences: the reference rank answers them
# each step. Same parameters and losses as colocated.
each_step() {  # each_step NAME NP PLACEMENT STAGES (YAML list items; \n between them)
  job "$1" "$3" 1 | awk -v stages="$4" '/^  - \{name: dpo/ {print stages; next} {print}' >"$work/$1.yaml"
  mpi "$2" "$ALN" train "$work/$1.yaml" >"$work/$1.out" 2>&1
  local rc=$?
  check "$1 exits 0 (rc $rc): $(tail -2 "$work/$1.out")" "[[ $rc -eq 0 ]]"
}
# (SFT on answers of four lengths first, so the samples differ in the attributes that are scored.)
short_answers "$work/short.jsonl" 4
sft="  - {name: sft, trainer: {sft: {}}, data: {train: [{path: $work/short.jsonl, format: sft_text}], max_prompt_length: 32, max_response_length: 24}, optimizer: {lr: 1e-2, max_steps: 8, micro_batch_size: 8}}"
prompts="data: {train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts, limit: 60}], max_prompt_length: 40}"
for objective in contrastive rl; do
  stage="$sft\n  - {name: ctl, trainer: {controllable: {objective: $objective, helpful_rule: length, harmless_rule: refusal, max_new_tokens: 12, group_size: 4}}, $prompts, optimizer: {lr: 1e-2, max_steps: 4, micro_batch_size: 2}}"
  each_step "ctl-$objective-colocated" 2 colocated "$stage"
  each_step "ctl-$objective-separate" 3 separate "$stage"
  check "controllable ($objective), reference on its own rank: same parameters and losses as colocated" \
    "same ctl-$objective-colocated ctl-$objective-separate && grep -q 'stage ctl: the reference ranks answer the per-token log-prob requests' '$work/ctl-$objective-separate.out'"
done
# The same RL objective beside a fully sharded policy: rank 0 alone puts the policy together (the
# stage's reference) to send it; the ranks decode in step.
job ctl-rl-separate-fsdp separate 1 | awk -v stages="$stage" '/^  - \{name: dpo/ {print stages; next} {print}' | fsdp \
  >"$work/ctl-rl-separate-fsdp.yaml"
mpi 3 "$ALN" train "$work/ctl-rl-separate-fsdp.yaml" >"$work/ctl-rl-separate-fsdp.out" 2>&1; rc=$?
check "controllable (rl) on 2 fully sharded ranks, reference on its own rank (rc $rc): same as colocated unsharded" \
  "[[ $rc -eq 0 ]] && same ctl-rl-colocated ctl-rl-separate-fsdp"
stage="  - {name: hair, trainer: {hair: {group_size: 2, max_new_tokens: 8, per_category: 4, encoder: $work/colocated/final}}, data: {train: [{path: examples/data/strongreject/strongreject_dataset.csv, format: prompts}], max_prompt_length: 40, max_response_length: 32}, optimizer: {lr: 1e-2, max_steps: 10, micro_batch_size: 1}}"
each_step hair-colocated 2 colocated "$stage"
each_step hair-separate 3 separate "$stage"
check "HAIR with its own sentence encoder, reference on its own rank: same parameters and losses as colocated" \
  "same hair-colocated hair-separate && grep -q 'stage hair: the reference ranks answer the per-token log-prob requests' '$work/hair-separate.out'"
# HAIR with the reference as its sentence encoder: the reference rank also embeds the demonstrations'
# and the samples' sentences (mean-pooled hidden states), so the data hardness is the same.
stage="${stage/, encoder: $work\/colocated\/final/}"
each_step hair-ref-colocated 2 colocated "$stage"
each_step hair-ref-separate 3 separate "$stage"
check "HAIR with the reference as sentence encoder, reference on its own rank: same parameters and losses as colocated" \
  "same hair-ref-colocated hair-ref-separate && grep -q 'stage hair: the reference ranks answer the per-token log-prob and sentence-embedding requests' '$work/hair-ref-separate.out'"

# The layout check.
job wrong-np separate 1 >"$work/wrong-np.yaml"
mpi 2 "$ALN" train "$work/wrong-np.yaml" >"$work/wrong-np.out" 2>&1; rc=$?
check "separate on 2 processes says 2 + 1 = 3 would fit (rc $rc)" \
  "[[ $rc -eq 2 ]] && grep -q 'needs 2 policy + 1 reference process(es) (parallel.reference.data_parallel) = 3, but the job runs on 2; start it with .mpirun -np 3 aln train JOB.yaml., or set placement: colocated to run on 2' '$work/wrong-np.out'"
mpi 4 "$ALN" train "$work/wrong-np.yaml" >"$work/wrong-np4.out" 2>&1; rc=$?
check "separate on 4 processes suggests reference.data_parallel 2 (rc $rc)" \
  "[[ $rc -eq 2 ]] && grep -q 'or set parallel.reference.data_parallel to 2' '$work/wrong-np4.out'"
job no-ref separate 1 | sed 's/trainer: {dpo: {}}/trainer: {sft: {}}/; s|examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf|examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz, format: hh_rlhf|' >"$work/no-ref.yaml"
mpi 3 "$ALN" train "$work/no-ref.yaml" >"$work/no-ref.out" 2>&1; rc=$?
check "separate without a reference stage is refused (rc $rc)" \
  "[[ $rc -ne 0 ]] && grep -q 'no stage takes reference log-probs' '$work/no-ref.out'"
job piped separate 1 | sed 's/reference: {data_parallel: 1}/reference: {data_parallel: 1, pipeline_parallel: 2}/' >"$work/piped.yaml"
mpi 3 "$ALN" train "$work/piped.yaml" >"$work/piped.out" 2>&1; rc=$?
check "a pipelined reference on its own ranks is refused by key (rc $rc)" \
  "[[ $rc -ne 0 ]] && grep -q 'parallel.reference.pipeline_parallel' '$work/piped.out'"

# A reference rank killed (SIGKILL) or frozen (SIGSTOP) while the policy trains: the reference
# rank idles then (its sums were handed over), outside any collective, so only mpirun (KILL) or rank
# 0's heartbeat monitor (STOP: silent for max(2 x timeout_s, 3 x heartbeat_s) = 20 s) can notice.
source tests/dist/fault_lib.sh
for signal in KILL STOP; do
  job fault-$signal separate 1 yes | sed "s/max_steps: 4,/max_steps: 100000,/; s/^metrics: .*/metrics: {port: 0, progress_bar: false}/" >"$work/fault-$signal.yaml"
  signal_rank 3 "$work/fault-$signal.yaml" "$work/fault-$signal.out" 2 $signal "$work/fault-$signal/train_log.jsonl" 6 \
    "$([[ $signal == STOP ]] && echo "scrape_until '$work/fault-$signal.out' '^aln_train_steps_total{.*rank=\"1\"'")"
  check "$signal: found the reference rank while the policy trains" "[[ -n '$victim' ]]"
  if [[ $signal == STOP ]]; then
    check "rank 0 serves policy rank 1's own series (rank label 1) and every rank's heartbeat age" \
      "grep -q '^aln_train_steps_total{.*rank=\"1\"' '$work/fault.metrics' && grep -q '^aln_rank_heartbeat_age_seconds{peer_rank=\"2\",peer_role=\"reference\"}' '$work/fault.metrics'"
  fi
  check "$signal of the reference rank ends the job non-zero within 60 s (rc $fault_rc, ${fault_took}s)" \
    "[[ $fault_rc -ne 0 && $fault_took -le 60 ]]"
  if [[ $signal == STOP ]]; then
    check "STOP: rank 0 names the silent rank: $(grep -m1 'sent no heartbeat' "$work/fault-$signal.out")" \
      "grep -q 'rank 2 (reference on .*) sent no heartbeat for 2[0-9] s' '$work/fault-$signal.out'"
  else
    check "KILL: the failure names rank 2: $(grep -m1 -i 'rank 2' "$work/fault-$signal.out")" "grep -qi 'rank 2' '$work/fault-$signal.out'"
  fi
done

summary
