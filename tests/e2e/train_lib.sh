# Shared by the method end-to-end tests (token_level, grpo, ptalign, hair, controllable): a temp dir
# removed on exit (kept with KEEP=1), check/summary counters, mpirun on loopback, the logged losses of
# a run, starting a run that is killed with SIGKILL once it has logged a given global step, scraping a
# running job's /metrics, and short SFT answers.
work="$(mktemp -d)"; pid=""
trap '[[ -n "$pid" ]] && kill -9 $pid 2>/dev/null; [[ -z "${KEEP:-}" ]] && rm -rf "$work"' EXIT
failures=0; passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
summary() { echo "$passed passed, $failures failed"; [[ $failures -eq 0 ]]; }
mpi() { "$MPIEXEC" -np "$1" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 "${@:2}"; }
# losses TRAIN_LOG [METRIC]: "global_step stage loss grad_norm [metric]" per logged step, exact reprs
losses() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    extra = " " + repr(j["metrics"].get(sys.argv[2])) if len(sys.argv) > 2 else ""
    print(j["global_step"], j["stage"], repr(j["loss"]), repr(j["grad_norm"]) + extra)' "$@"; }
# await_logged_step TRAIN_LOG STEP: waits (60 s at most) until TRAIN_LOG logs global step STEP or the
# background job $pid has ended.
await_logged_step() {
  for _ in $(seq 1 1200); do
    grep -q "\"global_step\":$2," "$1" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.05
  done
}
# run_and_kill YAML OUTPUT_DIR STEP: trains in the background and SIGKILLs it once STEP is logged;
# sets killed_at to the number of logged steps.
run_and_kill() {
  "$ALN" train "$1" >/dev/null 2>"$2.kill.err" &
  pid=$!
  await_logged_step "$2/train_log.jsonl" "$3"
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; pid=""
  killed_at=$(grep -c . "$2/train_log.jsonl" 2>/dev/null || echo 0)
}
# job_head NAME OUTPUT_DIR SEED: the top of a test job (the tiny one-layer Llama, GPT-2 tokenizer).
job_head() {
  cat <<YAML
name: $1
output_dir: $2
seed: $3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, max_position: 256}
YAML
}
# sft_stage STEPS ACCUM [MICRO] [MAX_RESPONSE]: a `stages:` entry fine-tuning on short_answers' $work/short.jsonl
# (so a tiny model learns to end its answers before the stage that samples from it).
sft_stage() {
  cat <<YAML
  - name: sft
    trainer: {sft: {}}
    data:
      train: [{path: $work/short.jsonl, format: sft_text}]
      max_prompt_length: 32
      max_response_length: ${4:-16}
    optimizer: {lr: 1e-2, max_steps: $1, micro_batch_size: ${3:-4}, gradient_accumulation: $2}
YAML
}
# job_tail DATA_PARALLEL CHECKPOINT_EVERY: deterministic ranks, checkpoints, quiet, one thread.
job_tail() {
  cat <<YAML
parallel: {policy: {data_parallel: $1}, deterministic: true}
checkpoint: {every_steps: $2, keep_last: 2}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
# scrape_while_running YAML OUT PATTERN: trains YAML with its metrics endpoint on a free loopback port
# (metrics.port 0; the job logs the URL) and its output in OUT, and polls /metrics until a line
# matches PATTERN (grep -E) or the job ends; then kills it. Sets scraped to the matching lines.
scrape_while_running() {
  sed "s|^metrics: .*|metrics: {enabled: true, port: 0, progress_bar: false}|; s|^output_dir: .*|output_dir: $2|" "$1" \
    >"$2.scrape.yaml"
  "$ALN" train "$2.scrape.yaml" >/dev/null 2>"$2.scrape.err" &
  pid=$!
  scraped=""
  local url=""
  for _ in $(seq 1 1200); do
    kill -0 $pid 2>/dev/null || break
    [[ -z "$url" ]] && url=$(grep -o "metrics at http://[0-9.:]*/metrics" "$2.scrape.err" 2>/dev/null | head -1 | cut -d" " -f3)
    if [[ -n "$url" ]]; then
      scraped=$(curl -sf --max-time 2 "$url" 2>/dev/null | grep -E "$3")
      [[ -n "$scraped" ]] && break
    fi
    sleep 0.1
  done
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; pid=""
}
# short_answers FILE [KINDS]: SFT data on XSTest's prompts with short answers written here, cycling
# through the first KINDS (default 2) of: a refusal, a one-line yes, a longer answer, "No." — so a
# tiny model learns within a few steps to end its answers.
short_answers() {
  python3 - "$1" "${2:-2}" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open("examples/data/xstest/xstest_prompts_shared.csv")))
answers = ["I'm sorry, I can't help with that.", "Sure, here is how to do it.",
           "Sure. First, find a safe place. Then ask an expert for help and follow their advice carefully.",
           "No."][:int(sys.argv[2])]
with open(sys.argv[1], "w") as f:
    for i, r in enumerate(rows):
        f.write(json.dumps({"prompt": r["prompt"], "response": answers[i % len(answers)]}) + "\n")
PY
}
