#!/usr/bin/env bash
# aln-launcher and alnctl end to end, every RPC over loopback against real launcher processes:
#  A. a real tiny training job submitted, watched to SUCCEEDED, its logs streamed; validation errors
#     (local with file:line, server-side with the key path, placement against the pool); the FIFO
#     queue; cancelling a running job ends its whole process group; service discovery lists the
#     running job and its /metrics answers.
#  B. restarts: a job running across a launcher kill -9 is re-attached; one that ended while the
#     launcher was down is SUCCEEDED from its exit-status file; one killed meanwhile is LOST; no
#     record is lost.
#  C. a job that ignores SIGTERM is SIGKILLed after the grace period.
#  D. bearer tokens (missing/wrong -> UNAUTHENTICATED, others' jobs -> PERMISSION_DENIED, admin
#     may), TLS with a throwaway certificate, the request size limit.
# Usage: launcher_e2e.sh ALN ALN_LAUNCHER ALNCTL   (run from the repository root)
set -uo pipefail
ALN="$1"; LAUNCHER="$2"; CTL="$3"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/launcher/lib.sh
ports() { echo "$((20000 + RANDOM % 30000)):40"; }  # jobs' /metrics ports, apart from other tests'

# ---------------------------------------------------------------- A. one launcher, real jobs
start_launcher A --data-dir "$work/a-data" --hosts localhost:2 --cancel-grace-s 5 --job-metrics-ports "$(ports)" \
  --slot-memory-gib 1
ctl() { "$CTL" --address "127.0.0.1:$A_port" "$@"; }
check "health is SERVING" '[[ "$(ctl health)" == SERVING ]]'

tiny_job "$work/short.yaml" 12
out="$(ctl submit "$work/short.yaml" --watch 2>&1)"; rc=$?
job1="$(head -1 <<<"$out")"
check "submit --watch of a real job exits 0 (got $rc: $out)" '[[ $rc -eq 0 && "$out" == *succeeded* ]]'
check "watch saw queued/starting/running before succeeded" '[[ "$out" == *running* ]]'
status_json="$(ctl --json status "$job1")"
check "status: step 12, exit code 0, a loss" \
  '[[ "$status_json" == *"\"step\":\"12\""* && "$status_json" == *"\"exit_code\":0,"* && "$status_json" != *"\"loss\":0,"* ]]'
human="$(ctl status "$job1")"
check "status summarises the last step's metrics (stage, nll, tokens/s)" \
  '[[ "$human" == *"stage tiny-sft"* && "$human" == *nll* && "$human" == *tokens_per_second* ]]'
check "list --state succeeded has the job" 'ctl list --state succeeded | grep -q "^$job1 .*tiny-sft"'
check "logs stream the job's output" 'ctl logs "$job1" | grep -q "final model"'
check "the job ran in the submitter's directory, outputs in its run dir" \
  '[[ -s "$work/a-data/jobs/$job1/run/train_log.jsonl" && -d "$work/a-data/jobs/$job1/run/final" ]]'
check "unknown job: NOT_FOUND, exit 1" '! ctl status job-999999 2>"$work/err" && grep -q NOT_FOUND "$work/err"'

# Validation: locally (file:line), on the server (key path), placement against the pool.
sed -E 's/lr: 1e-3/lr: -1/' "$work/short.yaml" >"$work/bad.yaml"
ctl submit "$work/bad.yaml" 2>"$work/err"; rc=$?
check "a bad spec is refused locally with file:line and key (rc $rc: $(cat "$work/err"))" \
  '[[ $rc -eq 2 ]] && grep -q "bad.yaml:[0-9]*:.*optimizer.lr" "$work/err"'
ctl submit "$work/bad.yaml" --skip-local-validation 2>"$work/err"; rc=$?
check "the launcher rejects it too: INVALID_ARGUMENT naming the key path (rc $rc: $(cat "$work/err"))" \
  '[[ $rc -eq 2 ]] && grep -q "INVALID_ARGUMENT.*optimizer.lr" "$work/err"'
printf 'parallel:\n  policy: {data_parallel: 3}\n' >>"$work/short.yaml.big"; cat "$work/short.yaml" "$work/short.yaml.big" >"$work/big.yaml"
ctl submit "$work/big.yaml" 2>"$work/err"; rc=$?
check "a job bigger than the pool: INVALID_ARGUMENT naming parallel.policy.data_parallel ($(cat "$work/err"))" \
  '[[ $rc -eq 2 ]] && grep -q "INVALID_ARGUMENT.*parallel.policy.data_parallel.*3 processes.*2 slots" "$work/err"'

# Memory pre-flight: 1 GiB slots cannot hold a 0.91 B-parameter policy's training state (16 bytes a
# parameter unsharded); the refusal names the numbers and what to change.
sed -E 's/hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64/hidden_size: 2048, num_layers: 16, num_heads: 16, intermediate_size: 5504/' \
  "$work/short.yaml" >"$work/huge.yaml"
ctl submit "$work/huge.yaml" 2>"$work/err"; rc=$?
check "a policy bigger than a slot's memory: INVALID_ARGUMENT with the estimate ($(cat "$work/err"))" \
  '[[ $rc -eq 2 ]] && grep -q "INVALID_ARGUMENT.*policy.s training state alone needs at least 13.60 GiB per rank.*one slot.s 1.00 GiB" "$work/err"'

# A long job: running, discoverable, its /metrics answering; then the FIFO queue; then cancel.
tiny_job "$work/long.yaml" 1000000
long1="$(ctl submit "$work/long.yaml")"
check "long job reaches RUNNING" 'wait_state "$A_port" "$long1" running 60'
sd="$(curl -sf --max-time 5 "http://127.0.0.1:$A_http/sd")"
target="$(sed -nE 's/.*"targets":\["([^"]+)"\].*/\1/p' <<<"$sd")"
check "/sd lists the running job with its labels ($sd)" '[[ "$sd" == *"\"aln_job_id\":\"$long1\""* && -n "$target" ]]'
for _ in $(seq 1 100); do  # RUNNING means serving /metrics; the first step may still be coming
  job_metrics="$(curl -sf --max-time 5 "http://$target/metrics")"
  grep -q "^aln_train_steps_total" <<<"$job_metrics" && break
  sleep 0.2
done
check "the discovered target serves the job's metrics" 'grep -q "^aln_train_steps_total" <<<"$job_metrics"'
launcher_metrics="$(curl -sf --max-time 5 "http://127.0.0.1:$A_http/metrics")"
check "the launcher's own /metrics" 'grep -q "aln_launcher_jobs{.*state=\"RUNNING\"} 1" <<<"$launcher_metrics"'
long2="$(ctl submit "$work/long.yaml")"
check "second long job takes the second slot" 'wait_state "$A_port" "$long2" running 60'
queued="$(ctl submit "$work/short.yaml")"
sleep 0.5
check "third job waits: QUEUED at position 0" \
  '[[ "$(state "$A_port" "$queued")" == queued ]] && ctl status "$queued" | grep -q "position 0"'
check "cancelling a queued job ends it at once" \
  'ctl cancel "$queued" >/dev/null && [[ "$(state "$A_port" "$queued")" == cancelled ]]'
mapfile -t job_pids < <(pgrep -f "$work/a-data/jobs/$long1/job.yaml")
check "the running job has processes (${job_pids[*]:-none})" '[[ ${#job_pids[@]} -ge 1 ]]'
t0=$SECONDS
ctl cancel "$long1" >/dev/null
check "cancel: CANCELLED well within the grace period (aln stops on SIGTERM)" 'wait_state "$A_port" "$long1" cancelled 20'
check "cancel took $((SECONDS - t0)) s" '(( SECONDS - t0 < 5 ))'
sleep 0.3
check "no process of the cancelled job is left" '! pgrep -f "$work/a-data/jobs/$long1/job.yaml" >/dev/null'
check "cancelling an ended job: FAILED_PRECONDITION" '! ctl cancel "$long1" 2>"$work/err" && grep -q FAILED_PRECONDITION "$work/err"'
ctl logs -f "$long2" >"$work/follow.out" 2>&1 &
follow_pid=$!
sleep 1
ctl cancel "$long2" >/dev/null
for _ in $(seq 1 100); do kill -0 $follow_pid 2>/dev/null || break; sleep 0.1; done
check "logs -f ends when the followed job ends" '! kill -0 $follow_pid 2>/dev/null'
check "logs -f streamed the job's log" 'grep -q "aln-launcher: starting $long2" "$work/follow.out"'
check "list shows the 4 accepted jobs (rejected specs are not jobs)" '[[ $(ctl list | tail -n +2 | wc -l) -eq 4 ]]'
check "list --json filters by user" '[[ $(ctl --json list --user nobody-else) != *job-* ]]'

# ---------------------------------------------------------------- B. launcher restarts
start_launcher B --data-dir "$work/b-data" --hosts localhost:3 --job-metrics-ports "$(ports)"
ctlb() { "$CTL" --address "127.0.0.1:$B_port" "$@"; }
survivor="$(ctlb submit "$work/long.yaml")"
victim="$(ctlb submit "$work/long.yaml")"
check "two long jobs running under B" 'wait_state "$B_port" "$survivor" running 60 && wait_state "$B_port" "$victim" running 60'
tiny_job "$work/medium.yaml" 60
finisher="$(ctlb submit "$work/medium.yaml")"
check "a short job started under B" 'wait_state "$B_port" "$finisher" running 60'
kill -KILL "$B_pid"; wait "$B_pid" 2>/dev/null
# The whole group at once (wrapper included) while nobody watches: no exit status is written.
victim_pgid="$(ps -o pgid= -p "$(pgrep -f "$work/b-data/jobs/$victim/job.yaml" | head -1)" | tr -d ' ')"
kill -KILL -- "-$victim_pgid"
for _ in $(seq 1 1200); do [[ -s "$work/b-data/jobs/$finisher/exit_status" ]] && break; sleep 0.1; done  # 2 min at most
check "the short job finished while the launcher was down" '[[ "$(cat "$work/b-data/jobs/$finisher/exit_status" 2>/dev/null)" == 0 ]]'
start_launcher B --data-dir "$work/b-data" --hosts localhost:3 --job-metrics-ports "$(ports)"
check "after restart: the surviving job is re-attached and RUNNING" '[[ "$(state "$B_port" "$survivor")" == running ]]'
check "after restart: the killed job is LOST with a reason" \
  '[[ "$(state "$B_port" "$victim")" == lost ]] && ctlb status "$victim" | grep -q "without an exit status"'
check "after restart: the job that ended meanwhile is SUCCEEDED" '[[ "$(state "$B_port" "$finisher")" == succeeded ]]'
check "after restart: every record is there" '[[ $(ctlb list | tail -n +2 | wc -l) -eq 3 ]]'
next="$(ctlb submit "$work/short.yaml")"
check "ids continue after a restart ($next)" '[[ "$next" == job-000004 ]]'
ctlb cancel "$survivor" >/dev/null
check "the re-attached job can be cancelled" 'wait_state "$B_port" "$survivor" cancelled 20'
sleep 0.3
check "and its processes are gone" '! pgrep -f "$work/b-data/jobs/$survivor/job.yaml" >/dev/null'
check "the job submitted after the restart succeeds" 'wait_state "$B_port" "$next" succeeded 60'

# ---------------------------------------------------------------- C. SIGTERM ignored -> SIGKILL
printf 'trap "" TERM\nsleep 600 &\nwait\n' >"$work/stubborn.sh"
start_launcher C --data-dir "$work/c-data" --hosts localhost:1 --cancel-grace-s 1 \
  --launch-template "/bin/sh $work/stubborn.sh {job_id}"
ctlc() { "$CTL" --address "127.0.0.1:$C_port" "$@"; }
stubborn="$(ctlc submit "$work/short.yaml")"
check "the stubborn job started" 'wait_state "$C_port" "$stubborn" starting 20 || wait_state "$C_port" "$stubborn" running 5'
sleep 0.5
t0=$SECONDS
ctlc cancel "$stubborn" >/dev/null
check "a job ignoring SIGTERM is CANCELLED after SIGKILL" 'wait_state "$C_port" "$stubborn" cancelled 15'
check "the grace period was honoured ($((SECONDS - t0)) s)" '(( SECONDS - t0 >= 1 ))'
check "its sleep is gone too" '! pgrep -f "$work/stubborn.sh $stubborn" >/dev/null'

# ---------------------------------------------------------------- D. tokens, TLS, size limit
alice=alice-0123456789abcdef; bob=bob-0123456789abcdef0; root=root-0123456789abcdef
printf '%s alice\n%s bob\n%s root admin\n' $alice $bob $root >"$work/tokens"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
start_launcher D --data-dir "$work/d-data" --hosts localhost:4 --tokens "$work/tokens" --tls-cert "$work/cert.pem" \
  --tls-key "$work/key.pem" --max-message-bytes 4096 --launch-template "/bin/sleep 600"
ctld() { "$CTL" --address "localhost:$D_port" --tls-ca "$work/cert.pem" "$@"; }
check "TLS: health over TLS is SERVING" '[[ "$(ctld health)" == SERVING ]]'
check "TLS: a plaintext client does not get through" '! "$CTL" --address "127.0.0.1:$D_port" --timeout 3 list 2>/dev/null'
ctld list 2>"$work/err"; rc=$?
check "no token: UNAUTHENTICATED" '[[ $rc -eq 1 ]] && grep -q UNAUTHENTICATED "$work/err"'
ALN_TOKEN=wrong-0123456789abcdef ctld list 2>"$work/err"
check "wrong token: UNAUTHENTICATED" 'grep -q "UNAUTHENTICATED.*unknown token" "$work/err"'
echo $alice >"$work/alice.token"
mine="$(ctld --token-file "$work/alice.token" submit "$work/short.yaml")"
check "alice submits with a token file ($mine)" '[[ "$mine" == job-000001 ]]'
owner="$(ALN_TOKEN=$root ctld --json status "$mine")"
check "the job belongs to alice" '[[ "$owner" == *"\"user\":\"alice\""* ]]'
ALN_TOKEN=$bob ctld cancel "$mine" 2>"$work/err"
check "bob may not cancel alice's job: PERMISSION_DENIED" 'grep -q "PERMISSION_DENIED.*belongs to alice" "$work/err"'
check "an admin may" 'ALN_TOKEN=$root ctld cancel "$mine" >/dev/null'
{ cat "$work/short.yaml"; for i in $(seq 1 100); do echo "# padding line $i of a job spec bigger than the limit"; done; } >"$work/huge.yaml"
ALN_TOKEN=$alice ctld submit "$work/huge.yaml" 2>"$work/err"
check "a request over --max-message-bytes: RESOURCE_EXHAUSTED ($(head -c 200 "$work/err"))" \
  'grep -q RESOURCE_EXHAUSTED "$work/err"'
check "launcher rejects a bad tokens file naming the line" \
  'echo "short alice" >"$work/bad-tokens"; ! "$LAUNCHER" --tokens "$work/bad-tokens" 2>&1 | grep -q "bad-tokens:1:" && false || true'
"$LAUNCHER" --tokens "$work/bad-tokens" --data-dir "$work/x" >"$work/err" 2>&1; rc=$?
check "bad tokens file: exit 2 and file:line" '[[ $rc -eq 2 ]] && grep -q "bad-tokens:1:" "$work/err"'
finish
