#!/usr/bin/env bash
# Every trainer on a GPU against the same job on the CPU (CTest label `gpu`; exit 77, a skip, where
# no GPU is visible). Each job is a short SFT stage then three steps of the method, float32,
# deterministic. The methods that only score (SFT, reward model, DPO, SafeDPO, Ra-DPO, the
# controllable method's clm objective) must log the CPU run's losses and gradient norms within 1e-4
# relative. The ones that sample (GRPO, HAIR, PT-ALIGN, controllable rl) draw from each device's own
# generator, so their two runs differ by design: they must run, log every step and stay finite.
# Also: SFT, DPO and Ra-DPO in bf16 on the GPU within 2% of the float32 CPU run; 2 data-parallel
# ranks sharing the one GPU over MPI (host-staged) equal one rank with gradient accumulation, a
# checkpoint written on the GPU resumes on the CPU, and one written on the CPU resumes on the GPU.
# Run from the repository root: tests/gpu/trainers_gpu_test.sh ALN [MPIEXEC]
set -uo pipefail
ALN="$1"; MPIEXEC="${2:-mpirun}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/e2e/train_lib.sh

if ! "$ALN" version | grep -q "device(s))"; then
  echo "SKIP: no CUDA device ($("$ALN" version | grep CUDA | sed 's/^ *//'))"
  exit 77
fi
short_answers "$work/short.jsonl"

method_stage() {  # method_stage METHOD: the method's stage entry (three steps)
  case $1 in
    sft) echo "    trainer: {sft: {}}"; echo "    data: {train: [{path: $work/short.jsonl, format: sft_text}], max_prompt_length: 32, max_response_length: 16}" ;;
    reward) echo "    trainer: {reward: {}}"; pairs ;;
    dpo) echo "    trainer: {dpo: {beta: 0.1}}"; pairs ;;
    safedpo) echo "    trainer: {safedpo: {beta: 0.1, delta: 1}}"; pairs ;;
    radpo) echo "    trainer: {radpo: {}}"; pairs ;;
    ctl_clm) echo "    trainer: {controllable: {objective: clm}}"; echo "    data: {train: [{path: $work/short.jsonl, format: sft_text}], max_prompt_length: 32, max_response_length: 16}" ;;
    grpo) echo "    trainer: {grpo: {group_size: 4, beta: 0.04, max_new_tokens: 12, reward_rule: brevity}}"; prompts ;;
    ctl_rl) echo "    trainer: {controllable: {objective: rl, helpful_rule: length, harmless_rule: refusal, max_new_tokens: 12, group_size: 4}}"; prompts ;;
    hair) echo "    trainer: {hair: {group_size: 4, max_new_tokens: 12, irl_lr: 3e-3, per_category: 20}}"
          echo "    data: {train: [{path: examples/data/strongreject/strongreject_dataset.csv, format: prompts}], max_prompt_length: 40, max_response_length: 64}" ;;
    ptalign) echo "    trainer: {ptalign: {token_weights: not_in_positive, lexicon_path: examples/ptalign/lexicon.txt, num_instructions: 6, max_new_tokens: 10, refinement_rounds: 1, min_response_tokens: 1}}"
             echo "    data: {train: [{path: examples/ptalign/seeds.jsonl, format: preference}], max_prompt_length: 40, max_response_length: 24}" ;;
  esac
}
pairs() { echo "    data: {train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf}], max_prompt_length: 32, max_response_length: 16}"; }
prompts() { echo "    data: {train: [{path: examples/data/xstest/xstest_prompts_shared.csv, format: prompts, limit: 40}], max_prompt_length: 40}"; }

job() {  # job METHOD DEVICE OUT [DP] [MICRO] [ACCUM]
  job_head "gpu-$1" "$3" 5
  echo "stages:"
  sft_stage 4 1
  echo "  - name: $1"
  method_stage "$1"
  echo "    optimizer: {lr: 1e-2, max_steps: 3, micro_batch_size: ${5:-2}, gradient_accumulation: ${6:-1}}"
  job_tail "${4:-1}" 2 | sed "s/^runtime: .*/runtime: {threads: 1, device: $2}/"
}
# close TRAIN_LOG_A TRAIN_LOG_B TOL: every logged loss and gradient norm within TOL relative
close() { python3 - "$@" <<'PY'
import json, math, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
tol = float(sys.argv[3])
worst = 0.0
assert len(a) == len(b) and a, (len(a), len(b))
for x, y in zip(a, b):
    for k in ("loss", "grad_norm"):
        worst = max(worst, abs(x[k] - y[k]) / max(abs(x[k]), 1e-12))
print(f"max relative difference {worst:.3g}")
sys.exit(0 if worst <= tol else 1)
PY
}
finite() { python3 -c '
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if len(rows) >= 7 and all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows) else 1)' "$1"; }

for method in sft reward dpo safedpo radpo ctl_clm grpo ctl_rl hair ptalign; do
  job $method cpu "$work/$method-cpu" >"$work/$method-cpu.yaml"
  job $method cuda "$work/$method-gpu" >"$work/$method-gpu.yaml"
  "$ALN" train "$work/$method-cpu.yaml" >"$work/$method-cpu.out" 2>&1; rc_c=$?
  "$ALN" train "$work/$method-gpu.yaml" >"$work/$method-gpu.out" 2>&1; rc_g=$?
  case $method in
    grpo|ctl_rl|hair|ptalign)
      check "$method on cuda runs (rc cpu $rc_c, gpu $rc_g; $(grep -v '^ ' "$work/$method-gpu.out" | tail -1))" \
        "[[ $rc_c -eq 0 && $rc_g -eq 0 ]] && finite '$work/$method-gpu/train_log.jsonl'" ;;
    *)
      diff=$(close "$work/$method-cpu/train_log.jsonl" "$work/$method-gpu/train_log.jsonl" 1e-4 2>&1 | tail -1)
      check "$method on cuda equals the CPU run within 1e-4 (rc cpu $rc_c, gpu $rc_g; $diff; $(grep -v '^ ' "$work/$method-gpu.out" | tail -1))" \
        "[[ $rc_c -eq 0 && $rc_g -eq 0 ]] && close '$work/$method-cpu/train_log.jsonl' '$work/$method-gpu/train_log.jsonl' 1e-4 >/dev/null" ;;
  esac
done

# Mixed precision on the GPU (bf16 passes over float32 master weights, cuBLAS's bf16 products)
# against the float32 CPU run: within 2%. Why 2%: bf16 keeps 8 significant bits, so each product's
# inputs are rounded by up to 2^-9 (0.2%); on the CPU the same runs stay within 0.36% of float32
# (bf16_e2e), and the GPU sums the products in another order over these 7 steps.
for method in sft dpo radpo; do
  job $method cuda "$work/$method-bf16" | sed "s/^  chat_format: hh/  chat_format: hh\n  dtype: bfloat16/" \
    >"$work/$method-bf16.yaml"
  "$ALN" train "$work/$method-bf16.yaml" >"$work/$method-bf16.out" 2>&1; rc=$?
  diff=$(close "$work/$method-cpu/train_log.jsonl" "$work/$method-bf16/train_log.jsonl" 0.02 2>&1 | tail -1)
  check "$method in bf16 on cuda within 2% of the float32 CPU run (rc $rc; $diff; $(grep -v '^ ' "$work/$method-bf16.out" | tail -1))" \
    "[[ $rc -eq 0 ]] && grep -q 'mixed precision' '$work/$method-bf16.out' && close '$work/$method-cpu/train_log.jsonl' '$work/$method-bf16/train_log.jsonl' 0.02 >/dev/null"
done

# Two ranks sharing the GPU over MPI (their collectives through host buffers) = one rank accumulating.
job dpo cuda "$work/dp2" 2 2 1 >"$work/dp2.yaml"
job dpo cuda "$work/dp1" 1 2 2 >"$work/dp1.yaml"
mpi 2 "$ALN" train "$work/dp2.yaml" >"$work/dp2.out" 2>&1; rc2=$?
"$ALN" train "$work/dp1.yaml" >"$work/dp1.out" 2>&1; rc1=$?
check "2 ranks on one GPU over MPI equal 1 rank with accumulation (rc $rc2, $rc1; $(close "$work/dp1/train_log.jsonl" "$work/dp2/train_log.jsonl" 1e-5 2>&1 | tail -1))" \
  "[[ $rc2 -eq 0 && $rc1 -eq 0 ]] && close '$work/dp1/train_log.jsonl' '$work/dp2/train_log.jsonl' 1e-5 >/dev/null"

# A checkpoint written on the GPU resumes on the CPU to the uninterrupted GPU run's end.
job dpo cuda "$work/resume" >"$work/resume.yaml"
run_and_kill "$work/resume.yaml" "$work/resume" 5
sed -i 's/device: cuda/device: cpu/' "$work/resume.yaml"
"$ALN" train "$work/resume.yaml" --resume >"$work/resume.out" 2>&1; rc=$?
check "a GPU checkpoint (killed after $killed_at steps) resumes on the CPU to the GPU run's losses (rc $rc; $(close "$work/dpo-gpu/train_log.jsonl" "$work/resume/train_log.jsonl" 1e-4 2>&1 | tail -1))" \
  "[[ $rc -eq 0 ]] && close '$work/dpo-gpu/train_log.jsonl' '$work/resume/train_log.jsonl' 1e-4 >/dev/null"
# And back: a checkpoint written on the CPU resumes on the GPU to the uninterrupted CPU run's end.
job dpo cpu "$work/resume-back" >"$work/resume-back.yaml"
run_and_kill "$work/resume-back.yaml" "$work/resume-back" 5
sed -i 's/device: cpu/device: cuda/' "$work/resume-back.yaml"
"$ALN" train "$work/resume-back.yaml" --resume >"$work/resume-back.out" 2>&1; rc=$?
check "a CPU checkpoint (killed after $killed_at steps) resumes on the GPU to the CPU run's losses (rc $rc; $(close "$work/dpo-cpu/train_log.jsonl" "$work/resume-back/train_log.jsonl" 1e-4 2>&1 | tail -1))" \
  "[[ $rc -eq 0 ]] && close '$work/dpo-cpu/train_log.jsonl' '$work/resume-back/train_log.jsonl' 1e-4 >/dev/null"
summary
