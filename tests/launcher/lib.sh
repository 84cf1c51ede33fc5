# Shared by the launcher tests: a temp dir, check/finish counters, starting and stopping
# aln-launcher processes on loopback ports they pick themselves (--listen 127.0.0.1:0 and a
# ready file), and waiting with a timeout for a job state.
work="$(mktemp -d "${TMPDIR:-/tmp}/aln-launcher-test.XXXXXX")"
pids=()
failures=0; passed=0
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  sleep 0.3
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  # Jobs run in their own process groups; end whatever a failed test left behind.
  pkill -KILL -f "$work/" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
finish() {
  if [[ $failures -gt 0 ]]; then
    for f in "$work"/*.log; do echo "--- $f (tail) ---"; tail -n 20 "$f"; done
  fi
  echo "$passed passed, $failures failed"
  [[ $failures -eq 0 ]]; exit
}

# start_launcher NAME [flags...]: sets ${NAME}_port, ${NAME}_http, ${NAME}_pid
start_launcher() {
  local name="$1"; shift
  rm -f "$work/$name.ready"
  "$LAUNCHER" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --ready-file "$work/$name.ready" \
    --aln "$ALN" "$@" >>"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do [[ -s "$work/$name.ready" ]] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if [[ ! -s "$work/$name.ready" ]]; then echo "FAIL: $name did not start"; tail "$work/$name.log"; exit 1; fi
  eval "${name}_port=$(sed -E 's/.*"grpc_port": ([0-9]+).*/\1/' "$work/$name.ready")"
  eval "${name}_http=$(sed -E 's/.*"http_port": ([0-9]+).*/\1/' "$work/$name.ready")"
  eval "${name}_pid=$pid"
}

# state PORT JOB: the job's state in lower case ("" when the call fails)
state() { "$CTL" --address "127.0.0.1:$1" --json status "$2" 2>/dev/null | sed -nE 's/.*"state": ?"([A-Z_]+)".*/\1/p' | tr 'A-Z' 'a-z'; }
# wait_state PORT JOB STATE SECONDS
wait_state() {
  local deadline=$((SECONDS + $4)) s
  while (( SECONDS < deadline )); do
    s="$(state "$1" "$2")"
    [[ "$s" == "$3" ]] && return 0
    sleep 0.2
  done
  echo "  (job $2 is '$(state "$1" "$2")', waited $4 s for '$3')"
  return 1
}
# tiny_job FILE MAX_STEPS: a copy of the tiny job with another length
tiny_job() { sed -E "s/max_steps: [0-9]+/max_steps: $2/" tests/launcher/tiny_job.yaml >"$1"; }
