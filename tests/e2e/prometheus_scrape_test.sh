#!/usr/bin/env bash
# A real Prometheus server (Debian's `prometheus`) scrapes a running `aln train` job every second, and
# its HTTP query API (/api/v1/query) shows what a dashboard would: the target is up while the job
# runs, the step counter aln_train_steps_total rises, the loss gauge aln_train_loss changes, the
# series carry the job/rank/role/trainer labels, and the target goes down once the job has exited.
# Loopback only; both ports are picked here (another one is tried if a bind fails); everything lives
# in a temporary directory removed on exit. Usage: prometheus_scrape_test.sh ALN [PYTHON]
set -uo pipefail
ALN="$1"; PY="${2:-}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -z "$PY" ]]; then if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi; fi
for tool in prometheus promtool curl; do
  command -v $tool >/dev/null || { echo "FAIL: '$tool' is not installed (scripts/setup.sh installs it)"; exit 1; }
done

job=promscrape
max_steps=800  # long enough for several scrapes on a fast machine (about 25 s here)
work="$(mktemp -d "${TMPDIR:-/tmp}/aln-promscrape.XXXXXX")"
aln_pid=""; prom_pid=""
stop() {  # PID: SIGTERM, up to 10 s to go, then SIGKILL
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
}
trap 'stop "$aln_pid"; stop "$prom_pid"; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

failures=0; passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
finish() {
  if [[ $failures -gt 0 ]]; then
    echo "--- prometheus log (tail) ---"; tail -n 30 "$work/prom.log" 2>/dev/null
    echo "--- aln stderr (tail) ---"; tail -n 15 "$work/aln.err" 2>/dev/null
  fi
  echo "$passed passed, $failures failed"
  [[ $failures -eq 0 ]]; exit
}

free_port() {  # a loopback port nothing listens on now (the bind itself may still lose a race: callers retry)
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}
prom_query() {  # EXPR: "metric_name value" per sample of an instant query (every sample for a range vector)
  curl -sf --max-time 5 --get --data-urlencode "query=$1" "http://127.0.0.1:$prom_port/api/v1/query" 2>/dev/null |
    "$PY" -c '
import json, sys
d = json.load(sys.stdin)
assert d["status"] == "success", d
for r in d["data"]["result"]:
    for _, v in ([r["value"]] if "value" in r else r["values"]):
        print(r["metric"].get("__name__", "-"), v)' 2>/dev/null
}

# 1. The aln job: one SFT stage on a tiny model from scratch, long enough for dozens of scrapes.
write_job() {  # PORT
  cat >"$work/job.yaml" <<EOF
name: $job
output_dir: $work/run
seed: 7
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  dtype: float32
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1,
           intermediate_size: 64, max_position: 128}
trainer: {sft: {}}
data:
  train:
    - {path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf, limit: 300}
  max_prompt_length: 48
  max_response_length: 32
  bad_records: skip
optimizer: {lr: 3e-3, schedule: cosine, warmup_steps: 5, max_steps: $max_steps, micro_batch_size: 4}
metrics: {port: $1, progress_bar: false}
checkpoint: {every_steps: 0}
runtime: {threads: 1}
EOF
}
aln_port=""
for attempt in 1 2 3 4 5; do
  port=$(free_port) || break
  write_job "$port"
  "$ALN" train "$work/job.yaml" >"$work/aln.out" 2>"$work/aln.err" &
  aln_pid=$!
  up=""
  for _ in $(seq 1 300); do  # 60 s for the metrics endpoint to answer
    if ! kill -0 "$aln_pid" 2>/dev/null; then break; fi
    if curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/metrics"; then up=yes; break; fi
    sleep 0.2
  done
  if [[ -n "$up" ]]; then aln_port=$port; break; fi
  stop "$aln_pid"; wait "$aln_pid" 2>/dev/null; aln_pid=""
  grep -q "cannot serve metrics" "$work/aln.err" || break  # only a lost port race is worth another try
done
check "aln serves /metrics on 127.0.0.1 (attempt $attempt): $(tail -3 "$work/aln.err")" "[[ -n '$aln_port' ]]"
[[ -n "$aln_port" ]] || finish
echo "aln train serves 127.0.0.1:$aln_port/metrics (attempt $attempt)"

# 2. Prometheus: scrape that one target every second; checked by promtool first.
write_prom_config() {
  cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: $job
    # aln labels its own series with job="<job name>"; keep it rather than renaming it to exported_job.
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:$aln_port']
EOF
}
write_prom_config
promtool check config "$work/prometheus.yml" >"$work/promtool.out" 2>&1; rc=$?
check "promtool check config (exit $rc): $(tail -3 "$work/promtool.out")" "[[ $rc -eq 0 ]] && grep -q SUCCESS '$work/promtool.out'"
prom_port=""
for attempt in 1 2 3 4 5; do
  port=$(free_port) || break
  rm -rf "$work/tsdb"
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" --log.level=info >"$work/prom.log" 2>&1 &
  prom_pid=$!
  ready=""
  for _ in $(seq 1 300); do  # 60 s to become ready
    if ! kill -0 "$prom_pid" 2>/dev/null; then break; fi
    if curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/-/ready"; then ready=yes; break; fi
    sleep 0.2
  done
  if [[ -n "$ready" ]]; then prom_port=$port; break; fi
  stop "$prom_pid"; wait "$prom_pid" 2>/dev/null; prom_pid=""
  grep -qi "address already in use" "$work/prom.log" || break
done
check "prometheus ready on 127.0.0.1 (attempt $attempt)" "[[ -n '$prom_port' ]]"
[[ -n "$prom_port" ]] || finish
echo "prometheus listens on 127.0.0.1:$prom_port (attempt $attempt)"

# 3. While the job runs, ask Prometheus (not aln) once a second.
sel="job=\"$job\",rank=\"0\",role=\"policy\",trainer=\"sft\""
steps_seen=(); losses_seen=(); up_seen=""; last_step=""
deadline=$(( SECONDS + 300 ))
while kill -0 "$aln_pid" 2>/dev/null && (( SECONDS < deadline )); do
  # One query a second for all three (`or` keeps up's series: its label set differs from aln's).
  now=$(prom_query "{__name__=~\"aln_train_steps_total|aln_train_loss\",$sel} or up{job=\"$job\"}")
  s=$(awk '$1 == "aln_train_steps_total" {print $2; exit}' <<<"$now")
  l=$(awk '$1 == "aln_train_loss" {print $2; exit}' <<<"$now")
  u=$(awk '$1 == "up" {print $2; exit}' <<<"$now")
  if [[ -n "$s" && "$s" != "$last_step" ]]; then steps_seen+=("$s"); last_step="$s"; fi
  if [[ -n "$l" ]]; then losses_seen+=("$l"); fi
  if [[ "$u" == 1 ]] && kill -0 "$aln_pid" 2>/dev/null; then up_seen=yes; fi
  sleep 1
done
timed_out=""; if kill -0 "$aln_pid" 2>/dev/null; then timed_out=yes; stop "$aln_pid"; fi
wait "$aln_pid"; rc=$?; aln_pid=""
check "aln train finished within 300 s" "[[ -z '$timed_out' ]]"
check "aln train exit 0 (got $rc): $(tail -3 "$work/aln.err")" "[[ $rc -eq 0 ]]"
check "up{job=\"$job\"} == 1 while the job ran" "[[ -n '$up_seen' ]]"
distinct_losses=$(printf '%s\n' "${losses_seen[@]}" | sort -u | grep -c .)
echo "steps seen through Prometheus: ${steps_seen[*]:-none}"
echo "distinct losses seen through Prometheus: $distinct_losses ($(printf '%s\n' "${losses_seen[@]}" | awk '!seen[$0]++' | head -4 | paste -sd' ') ...)"
check "at least two distinct step counter values (saw ${#steps_seen[@]})" "[[ ${#steps_seen[@]} -ge 2 ]]"
check "the step counter only increases, within 1..$max_steps" \
  "printf '%s\n' ${steps_seen[*]:-} | awk -v max=$max_steps 'NR > 1 && \$1 <= prev {bad=1} \$1 < 1 || \$1 > max {bad=1} {prev=\$1} END {exit bad}'"
check "at least two distinct loss values (saw $distinct_losses)" "[[ $distinct_losses -ge 2 ]]"
check "every loss value is a finite positive number" \
  "printf '%s\n' ${losses_seen[*]:-x} | awk '!(\$1 + 0 > 0 && \$1 + 0 < 1e6) {bad=1} END {exit bad}'"

# 4. What Prometheus stored: the counter's history, and the target down once the job is gone.
history=$(prom_query "aln_train_steps_total{$sel}[10m]" | awk '{print $2}')
samples=$(grep -c . <<<"$history")
check "Prometheus stored >= 5 step counter samples, non-decreasing (got $samples)" \
  "[[ $samples -ge 5 ]] && awk 'NR > 1 && \$1 < prev {bad=1} {prev=\$1} END {exit bad}' <<<'$history'"
down=""
for _ in $(seq 1 30); do
  [[ "$(prom_query "up{job=\"$job\"}" | awk '{print $2; exit}')" == 0 ]] && { down=yes; break; }
  sleep 1
done
check "up{job=\"$job\"} == 0 after the job exited" "[[ -n '$down' ]]"
finish
