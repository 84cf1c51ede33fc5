#!/usr/bin/env bash
# The launcher as an attacker and a careless user meet it (issue 24's probes, turned into checks),
# over loopback gRPC against real launcher processes:
#  A. YAML alias bombs sent in one SubmitJob: refused at once, naming the limit, in little memory.
#  B. jobs confined to their run directory: Bob's checkpoint.dir pointing into Alice's job, absolute
#     written paths and stage names with '/' are refused; a relative checkpoint.dir lands in the run
#     directory of a real job.
#  C. reads by owner: GetJob, WatchJob, StreamLogs and ListJobs show Bob only his jobs; an admin
#     sees all; ListJobs pages (alnctl follows the pages).
#  D. log forging: a job name with a newline stays on one launcher log line; tokens without TLS off
#     loopback give a warning; out-of-range option values are refused.
#  E. start-once: a launcher killed -9 while a job is starting (held at its gate) starts it exactly
#     once after the restart; GetJob answers during a slow start; /healthz answers while a client
#     trickles its request a byte a second, and that client is cut off by the deadline.
#  F. --input-dirs: a job reads only below the allowed directories ({user} = its owner), '..' and
#     all; --max-jobs-per-user caps what one user has queued or running.
# Usage: launcher_security_test.sh ALN ALN_LAUNCHER ALNCTL   (run from the repository root)
set -uo pipefail
ALN="$1"; LAUNCHER="$2"; CTL="$3"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/launcher/lib.sh
ports() { echo "$((20000 + RANDOM % 30000)):40"; }

alice=alice-0123456789abcdef; bob=bob-0123456789abcdef0; root=root-0123456789abcdef
printf '%s alice\n%s bob\n%s root admin\n' $alice $bob $root >"$work/tokens"
as() { local token="$1"; shift; ALN_TOKEN="$token" "$CTL" --address "127.0.0.1:$S_port" "$@"; }
tiny_job "$work/short.yaml" 10

# ---------------------------------------------------------------- A. alias bombs
start_launcher S --data-dir "$work/s-data" --hosts localhost:8 --tokens "$work/tokens" --job-metrics-ports "$(ports)" \
  --launch-template "/bin/sleep 600"
python3 - "$work" <<'EOF'
import sys
work = sys.argv[1]
def bomb(stages, sources, path):
    ds = ", ".join(["*d"] * (sources - 1))
    with open(path, "w") as f:
        f.write("name: bomb\nmodel: {tokenizer: examples/data/tokenizers/gpt2/tokenizer.json}\nstages:\n")
        f.write("  - &s {name: s, trainer: {sft: {}}, data: {train: [&d {path: a.jsonl}, " + ds + "]}}\n")
        for _ in range(stages - 1):
            f.write("  - *s\n")
bomb(300_000, 2, f"{work}/bomb_300k.yaml")   # 1.2 MB: 300,000 stages by alias
bomb(64, 1024, f"{work}/bomb_budget.yaml")   # within the list caps, 200,000 nodes expanded
EOF
rss_kib() { sed -nE 's/^VmHWM:\s+([0-9]+) kB/\1/p' "/proc/$S_pid/status"; }
before="$(rss_kib)"
t0=$(date +%s%N)
as $alice submit "$work/bomb_300k.yaml" --skip-local-validation 2>"$work/err"; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "300,000 stages by alias: INVALID_ARGUMENT naming the cap (rc $rc, $ms ms: $(head -c 300 "$work/err"))" \
  '[[ $rc -eq 2 ]] && grep -q "INVALID_ARGUMENT.*submitted job:3: stages: too many items: 300000 > maximum 64" "$work/err"'
as $alice submit "$work/bomb_budget.yaml" --skip-local-validation 2>"$work/err"; rc=$?
check "64 x 1,024 sources by alias: INVALID_ARGUMENT naming the node budget (rc $rc: $(head -c 300 "$work/err"))" \
  '[[ $rc -eq 2 ]] && grep -q "INVALID_ARGUMENT.*more than 100000 YAML nodes (limit kMaxSpecNodes" "$work/err"'
after="$(rss_kib)"
echo "launcher peak RSS ${before} KiB before the bombs, ${after} KiB after; the 300k bomb answered in $ms ms"
check "the launcher's peak memory grew by less than 100 MiB ($before -> $after KiB)" '(( after - before < 102400 ))'
check "and it still serves" '[[ "$(as $alice health)" == SERVING ]]'

# ---------------------------------------------------------------- B. confinement
alice_job="$(as $alice submit "$work/short.yaml")"
check "alice's job is accepted ($alice_job)" '[[ "$alice_job" == job-0* ]]'
try_spec() {  # try_spec NAME YAML_TAIL WANT_REGEX: bob submits short.yaml plus YAML_TAIL
  { cat "$work/short.yaml"; printf '%s\n' "$2"; } >"$work/try.yaml"
  as $bob submit "$work/try.yaml" --skip-local-validation 2>"$work/err"; local rc=$? want="$3"
  check "$1 (rc $rc: $(head -c 300 "$work/err"))" '[[ $rc -eq 2 ]] && grep -qE "$want" "$work/err"'
}
try_spec "bob's checkpoint.dir into alice's job is refused" \
  "checkpoint: {keep_last: 1, dir: ../../$alice_job/run/checkpoints}" \
  "INVALID_ARGUMENT.*checkpoint.dir: '../../$alice_job/run/checkpoints' leaves the run directory"
try_spec "an absolute checkpoint.dir is refused" "checkpoint: {dir: $work/s-data/jobs/$alice_job/run}" \
  "INVALID_ARGUMENT.*checkpoint.dir: '.*' is an absolute path; a job run by the launcher writes only inside"
try_spec "an absolute reference.cache_dir is refused" "reference: {cache_dir: /tmp/shared-cache}" \
  "INVALID_ARGUMENT.*reference.cache_dir: '/tmp/shared-cache' is an absolute path"
sed -E 's/^name: tiny-sft/name: ..\/..\/escape/' "$work/short.yaml" >"$work/try.yaml"
as $bob submit "$work/try.yaml" --skip-local-validation 2>"$work/err"
check "a job name with '/' (its stage's folder) is refused ($(head -c 200 "$work/err"))" \
  'grep -q "INVALID_ARGUMENT.*:[0-9]*: name: .*cannot name a folder" "$work/err"'
check "locally too, with file:line" '! as $bob submit "$work/try.yaml" 2>"$work/err" && grep -q "try.yaml:3: name:" "$work/err"'

# A real job with a relative checkpoint.dir: its checkpoints land in its own run directory.
start_launcher R --data-dir "$work/r-data" --hosts localhost:1 --job-metrics-ports "$(ports)"
{ cat "$work/short.yaml"; echo "checkpoint: {dir: ckpt, every_steps: 5, keep_last: 1}"; } >"$work/ckpt.yaml"
real="$("$CTL" --address "127.0.0.1:$R_port" submit "$work/ckpt.yaml")"
check "a job with checkpoint.dir: ckpt succeeds" 'wait_state "$R_port" "$real" succeeded 120'
check "its checkpoints are in its run directory ($(ls "$work/r-data/jobs/$real/run" 2>&1 | tr '\n' ' '))" \
  '[[ -d "$work/r-data/jobs/$real/run/ckpt" && ! -e ckpt ]]'

# ---------------------------------------------------------------- C. reads by owner, pages
for i in 1 2; do as $alice submit "$work/short.yaml" >/dev/null; done     # alice: 3 jobs
bob1="$(as $bob submit "$work/short.yaml")"; bob2="$(as $bob submit "$work/short.yaml")"
as $bob status "$alice_job" 2>"$work/err"; rc=$?
check "bob's GetJob of alice's job: PERMISSION_DENIED (rc $rc: $(cat "$work/err"))" \
  '[[ $rc -eq 1 ]] && grep -q "PERMISSION_DENIED.*belongs to another user" "$work/err"'
timeout 10 env ALN_TOKEN=$bob "$CTL" --address "127.0.0.1:$S_port" watch "$alice_job" 2>"$work/err"
check "bob's WatchJob of alice's job: PERMISSION_DENIED" 'grep -q PERMISSION_DENIED "$work/err"'
timeout 10 env ALN_TOKEN=$bob "$CTL" --address "127.0.0.1:$S_port" logs "$alice_job" >"$work/out" 2>"$work/err"
check "bob's StreamLogs of alice's job: PERMISSION_DENIED, no line shown" \
  'grep -q PERMISSION_DENIED "$work/err" && [[ ! -s "$work/out" ]]'
check "bob's own job reads fine" 'as $bob status "$bob1" | grep -q "user       bob"'
check "bob lists his 2 jobs only" '[[ "$(as $bob list | tail -n +2 | awk "{print \$1}" | tr "\n" " ")" == "$bob1 $bob2 " ]]'
check "bob may not list alice's" '! as $bob list --user alice 2>"$work/err" && grep -q PERMISSION_DENIED "$work/err"'
check "alice lists her 3" '[[ $(as $alice list | tail -n +2 | wc -l) -eq 3 ]]'
check "an admin lists all 5" '[[ $(as $root list | tail -n +2 | wc -l) -eq 5 ]]'
check "an admin reads alice's job" 'as $root status "$alice_job" | grep -q "user       alice"'
paged="$(as $root list --page-size 2 | tail -n +2 | awk '{print $1}' | tr '\n' ' ')"
check "pages of 2 give the same 5 jobs in order ($paged)" '[[ "$paged" == "$(as $root list | tail -n +2 | awk "{print \$1}" | tr "\n" " ")" ]]'
list_calls() {
  curl -sf "http://127.0.0.1:$S_http/metrics" | grep "^aln_launcher_rpcs_total{" | grep 'method="ListJobs"' |
    grep 'code="OK"' | awk '{print $2}'
}
calls_before="$(list_calls)"; as $root list --page-size 2 >/dev/null; calls_after="$(list_calls)"
check "5 jobs in pages of 2 took 3 ListJobs calls (${calls_before} -> ${calls_after})" \
  '[[ $(( ${calls_after%.*} - ${calls_before%.*} )) -eq 3 ]]'
check "a page size over 1000 is INVALID_ARGUMENT" \
  '! as $root list --page-size 1001 2>"$work/err" && grep -q "INVALID_ARGUMENT.*page_size" "$work/err"'

# ---------------------------------------------------------------- D. log forging, warnings, options
# A multi-stage job: its name is no folder, so it may hold any character ('/' included).
cat >"$work/forge_name.yaml" <<'YAML'
name: "x\nI 00:00:00.000 r0/launcher] FORGED"
model: {tokenizer: examples/data/tokenizers/gpt2/tokenizer.json}
stages:
  - {name: s1, trainer: {sft: {}}, data: {train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl}]}}
YAML
forged="$(as $alice submit "$work/forge_name.yaml")"
check "a job named with a newline is accepted ($forged)" '[[ "$forged" == job-0* ]]'
sleep 0.5
check "no launcher log line starts with the forged text" '! grep -q "^I 00:00:00.000 r0/launcher] FORGED" "$work/S.log"'
check "the name is logged escaped, inside its line" "grep -qF 'x\\nI 00:00:00.000 r0/launcher] FORGED, sft' \"\$work/S.log\""
as $alice status "$forged" >"$work/out"; as $alice list >>"$work/out"
check "alnctl status and list show it escaped, on one line each" \
  '[[ $(grep -c "^name       x\\\\nI 00:00:00.000 r0/launcher\] FORGED$" "$work/out") -eq 1 && $(grep -c "^$forged " "$work/out") -eq 1 && $(grep -c "^I 00" "$work/out") -eq 0 ]]'
start_launcher T --data-dir "$work/t-data" --hosts localhost:1 --tokens "$work/tokens" --listen 0.0.0.0:0
check "tokens without TLS off loopback: a warning" 'grep -q "with --tokens but without TLS: tokens cross the network in plain text" "$work/T.log"'
"$LAUNCHER" --max-message-bytes 3000000000 --data-dir "$work/x" >"$work/out" 2>&1; rc=$?
check "--max-message-bytes above INT_MAX: exit 2 naming the range" \
  '[[ $rc -eq 2 ]] && grep -q "max-message-bytes: .3000000000. is not a number from 1024 to 1073741824" "$work/out"'
"$LAUNCHER" --cancel-grace-s nan --data-dir "$work/x" >"$work/out" 2>&1; rc=$?
check "--cancel-grace-s nan: exit 2" '[[ $rc -eq 2 ]] && grep -q "cancel-grace-s" "$work/out"'

# ---------------------------------------------------------------- E. start-once, slow start, slow HTTP client
printf 'echo "run $1 $$" >>"%s/runs"\nexec sleep 600\n' "$work" >"$work/count.sh"
start_launcher G --data-dir "$work/g-data" --hosts localhost:2 --job-metrics-ports "$(ports)" \
  --launch-template "/bin/sh $work/count.sh {job_id}" --test-start-hold-s 3
held="$("$CTL" --address "127.0.0.1:$G_port" submit "$work/short.yaml")"
sleep 1  # the poll thread has taken it: its process is recorded and waits at the gate
t0=$(date +%s%N); st="$(state "$G_port" "$held")"; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "GetJob (alnctl status) during a 3 s start: $ms ms, state $st"
check "GetJob answers during a slow start ($ms ms, state $st)" '[[ "$st" == starting && $ms -lt 1000 ]]'
check "nothing of the job ran while it was held" '[[ ! -e "$work/runs" ]]'
kill -KILL "$G_pid"; wait "$G_pid" 2>/dev/null
start_launcher G --data-dir "$work/g-data" --hosts localhost:2 --job-metrics-ports "$(ports)" \
  --launch-template "/bin/sh $work/count.sh {job_id}"
for _ in $(seq 1 100); do [[ -s "$work/runs" ]] && break; sleep 0.1; done
sleep 1  # time for a second copy to show up, if there were one
check "after kill -9 in the start window and a restart, the job ran exactly once ($(cat "$work/runs" 2>/dev/null))" \
  '[[ $(grep -c "^run $held " "$work/runs" 2>/dev/null) -eq 1 && $(pgrep -fc "count.sh $held") -eq 1 ]]'
check "the restart queued it again, saying why" 'grep -q "$held: the launcher stopped while starting it, before it ran; queued again" "$work/G.log"'

( exec 3<>"/dev/tcp/127.0.0.1/$G_http" || exit; for _ in $(seq 1 20); do printf G >&3 || exit; sleep 1; done ) 2>/dev/null &
slow=$!; pids+=("$slow")
sleep 1.5
t0=$(date +%s%N); health="$(curl -s --max-time 5 "http://127.0.0.1:$G_http/healthz")"; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "/healthz with a client trickling a byte a second: $ms ms"
check "/healthz answers while a slow client holds a connection ($ms ms)" '[[ "$health" == ok && $ms -lt 1000 ]]'
for _ in $(seq 1 100); do kill -0 "$slow" 2>/dev/null || break; sleep 0.1; done
check "the slow client is cut off by the 3 s deadline" '! kill -0 "$slow" 2>/dev/null'

# ---------------------------------------------------------------- F. input directories, jobs per user
mkdir -p "$work/users/alice" "$work/users/bob"
echo '{}' >"$work/users/alice/private.jsonl"
start_launcher I --data-dir "$work/i-data" --hosts localhost:1 --tokens "$work/tokens" --job-metrics-ports "$(ports)" \
  --launch-template "/bin/sleep 600" --input-dirs "$PWD/examples/data,$work/users/{user}" --max-jobs-per-user 2
asI() { local token="$1"; shift; ALN_TOKEN="$token" "$CTL" --address "127.0.0.1:$I_port" "$@"; }
with_data() { sed -E "s|path: examples/data/xstest/xstest_pairs_shared.jsonl|path: $2|" "$work/short.yaml" >"$1"; }
with_data "$work/alice_private.yaml" "$work/users/alice/private.jsonl"
with_data "$work/climb.yaml" "examples/data/../../../../../../../../etc/passwd"
asI $bob submit "$work/alice_private.yaml" --skip-local-validation 2>"$work/err"; rc=$?
check "bob's job reading alice's input directory is refused (rc $rc: $(head -c 300 "$work/err"))" \
  '[[ $rc -ne 0 ]] && grep -q "PERMISSION_DENIED.*data.train\[0\].path: .*users/alice/private.jsonl. is .*, outside the directories this launcher lets jobs read" "$work/err"'
asI $bob submit "$work/climb.yaml" --skip-local-validation 2>"$work/err"; rc=$?
check "'..' out of an allowed directory is refused, naming where it leads ($(head -c 300 "$work/err"))" \
  '[[ $rc -ne 0 ]] && grep -q "is /etc/passwd, outside" "$work/err"'
a1="$(asI $alice submit "$work/alice_private.yaml" --skip-local-validation)"
a2="$(asI $alice submit "$work/short.yaml")"
check "alice reads her own directory and the shared one ($a1, $a2)" '[[ "$a1" == job-0* && "$a2" == job-0* ]]'
asI $alice submit "$work/short.yaml" 2>"$work/err"; rc=$?
check "alice's third job at once: RESOURCE_EXHAUSTED naming --max-jobs-per-user (rc $rc: $(head -c 300 "$work/err"))" \
  '[[ $rc -ne 0 ]] && grep -q "RESOURCE_EXHAUSTED.*user alice has 2 jobs queued or running.*--max-jobs-per-user 2" "$work/err"'
b1="$(asI $bob submit "$work/short.yaml")"
check "bob is not held to alice's count ($b1)" '[[ "$b1" == job-0* ]]'
asI $alice cancel "$a2" >/dev/null
a3="$(asI $alice submit "$work/short.yaml")"
check "once one of hers ended, alice may submit again ($a3)" '[[ "$a3" == job-0* ]]'
finish
