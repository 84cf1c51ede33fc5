#!/usr/bin/env bash
# 50 concurrent clients x 100 mixed requests against a real aln-launcher over loopback: zero
# unexpected errors, no job lost or duplicated, every job ends SUCCEEDED or CANCELLED. Jobs run
# `/bin/true` (the launcher's queue, store and process handling are under test, not training).
# The same run with timings is bench/launcher_load.sh. Usage: launcher_load_test.sh ALN ALN_LAUNCHER ALNCTL LOAD [OUT.json]
set -uo pipefail
ALN="$1"; LAUNCHER="$2"; CTL="$3"; LOAD="$4"; OUT="${5:-}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/launcher/lib.sh
start_launcher L --data-dir "$work/data" --hosts localhost:8 --launch-template /bin/true --poll-interval-s 0.05
"$LOAD" --address "127.0.0.1:$L_port" --spec tests/launcher/tiny_job.yaml --workdir "$PWD" \
  --clients "${ALN_LOAD_CLIENTS:-50}" --requests "${ALN_LOAD_REQUESTS:-100}" >"$work/load.json" 2>"$work/load.err"
rc=$?
cat "$work/load.json"; cat "$work/load.err"
[[ -n "$OUT" ]] && cp "$work/load.json" "$OUT"
check "50 clients x 100 requests: no errors, no job lost or duplicated, queue drained (rc $rc)" '[[ $rc -eq 0 ]]'
check "the store holds what ListJobs said" \
  '[[ $(sqlite3 "$work/data/jobs.sqlite" "select count(*) from jobs") -eq $(grep -o "\"jobs_listed\": [0-9]*" "$work/load.json" | grep -o "[0-9]*$") ]]'
finish
