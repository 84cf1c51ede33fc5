# Shared by the tests under mpirun that signal one rank mid-run (data_parallel, pipeline, placement);
# needs `mpi`, $ALN and the `pid` variable the caller's EXIT trap kills; the kill helpers also need
# train_lib.sh's await_logged_step.
# rank_pid RANK YAML: the PID of the aln process of world rank RANK running job file YAML.
rank_pid() {
  for p in $(pgrep -f "aln train $2"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then echo "$p"; return; fi
  done
}
# signal_rank NP YAML OUT RANK SIGNAL TRAIN_LOG LINES [BEFORE]: starts `mpi NP aln train YAML` (output in
# OUT), waits until TRAIN_LOG has LINES lines and rank RANK is found, runs the command BEFORE (a
# /metrics scrape), sends SIGNAL to the rank and waits for the job to end (90 s at most, then kills
# it). Sets victim (empty when the rank was not found), fault_rc, and fault_took (seconds from the
# signal to the end; 999 when it had to be killed).
signal_rank() {
  mpi "$1" "$ALN" train "$2" >"$3" 2>&1 &
  pid=$!
  victim=""
  for _ in $(seq 1 600); do
    [[ -f "$6" ]] && [[ $(wc -l <"$6") -ge $7 ]] && victim=$(rank_pid "$4" "$2") && [[ -n "$victim" ]] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$victim" ]]; then  # the job ended (or never logged) before the signal: say why
    echo "rank $4 was not found while training; the job's errors, then the end of its output:"
    grep -m5 -E 'aln train:|error|failed|did not' "$3" | sed 's/^/  ! /'
    tail -5 "$3" | sed 's/^/  | /'
  fi
  [[ -n "${8:-}" ]] && eval "$8"
  [[ -n "$victim" ]] && kill -"$5" "$victim"
  local signalled
  signalled=$(date +%s)
  for _ in $(seq 1 900); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  fault_took=""
  if kill -0 $pid 2>/dev/null; then
    kill -9 $pid; [[ -n "$victim" ]] && kill -9 "$victim" 2>/dev/null
    fault_took=999
  fi
  wait $pid; fault_rc=$?; pid=""
  [[ -z "$fault_took" ]] && fault_took=$(( $(date +%s) - signalled ))
  echo "$5 of rank $4: job ended with rc $fault_rc ${fault_took}s after the signal"
}
# Jobs here serve /metrics on port 0 (a free port the kernel picks; a fixed random one could collide
# with a port another test or an outgoing connection holds, and the job would end before its fault).
# metrics_url OUT: the URL rank 0 logged ("metrics at http://...") in the job's output OUT.
metrics_url() { grep -o "metrics at http://[0-9.:]*/metrics" "$1" 2>/dev/null | head -1 | cut -d" " -f3; }
# scrape_to OUT FILE: one scrape of the job's /metrics into FILE.
scrape_to() { curl -sf --max-time 5 "$(metrics_url "$1")" >"$2" 2>/dev/null; }
# scrape_until OUT PATTERN: scrapes rank 0's /metrics (URL from the job's output OUT) into
# $work/fault.metrics until a line matches PATTERN (another rank's series arrive with its next
# heartbeat, every heartbeat_s), 20 s at most.
scrape_until() {
  for _ in $(seq 1 80); do
    scrape_to "$1" "$work/fault.metrics"
    grep -q "$2" "$work/fault.metrics" && break
    sleep 0.25
  done
}
# kill_at_step NP YAML TRAIN_LOG STEP: runs `mpi NP aln train YAML` until TRAIN_LOG logs global step
# STEP, then kills every rank with SIGKILL (a job stopped mid-run, to resume).
kill_at_step() { kill_when_logged "$2" "$3" "$4" mpi "$1" "$ALN" train "$2"; }
# kill_when_logged YAML TRAIN_LOG STEP COMMAND...: the same for any command that trains YAML.
kill_when_logged() {
  "${@:4}" >/dev/null 2>&1 &
  pid=$!
  await_logged_step "$2" "$3"
  pkill -9 -f "aln train $1"; wait $pid 2>/dev/null; pid=""
}
