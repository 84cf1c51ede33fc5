#!/usr/bin/env bash
# The shipped monitoring, against a real Prometheus server (Debian's package) and a real job:
#  - promtool accepts deploy/prometheus/prometheus.yml and alerts.yml;
#  - Prometheus, configured from deploy/prometheus/prometheus.yml (addresses and the scrape interval
#    changed for the test), discovers a running 2-rank job through the launcher's /sd endpoint and
#    scrapes it and the launcher;
#  - every PromQL expression in deploy/grafana/dashboards/*.json and in alerts.yml is valid on that
#    server; every dashboard expression returns data, except the panels of methods this job does
#    not run (Ra-DPO/TDPO, HAIR) and the pipeline panels, which are listed; every metric an alert rule names is exported.
# Usage: monitoring_test.sh ALN ALN_LAUNCHER ALNCTL [PYTHON]
set -uo pipefail
ALN="$1"; LAUNCHER="$2"; CTL="$3"; PY="${4:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tests/launcher/lib.sh
for tool in prometheus promtool curl; do
  command -v $tool >/dev/null || { echo "FAIL: '$tool' is not installed (scripts/setup.sh installs it)"; exit 1; }
done

check "promtool check config deploy/prometheus/prometheus.yml" \
  'promtool check config deploy/prometheus/prometheus.yml >"$work/promtool.log" 2>&1'
check "promtool check rules deploy/prometheus/alerts.yml" 'promtool check rules deploy/prometheus/alerts.yml >>"$work/promtool.log" 2>&1'
check "the dashboards are what deploy/grafana/dashboards.py writes" \
  'cp -r deploy/grafana "$work/grafana" && "$PY" "$work/grafana/dashboards.py" >/dev/null &&
   diff -r deploy/grafana/dashboards "$work/grafana/dashboards" >/dev/null'

# A launcher running jobs under mpirun on loopback (the project's tested MPI flags).
template="mpirun -np {np} --host {hosts} --bind-to none --mca btl self,tcp --mca btl_tcp_if_include lo"
template+=" --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 -x ALN_OUTPUT_DIR -x ALN_METRICS_PORT -x ALN_JOB_ID"
template+=" {aln} train {spec}"
start_launcher L --data-dir "$work/data" --hosts localhost:2 --launch-template "$template" \
  --job-metrics-ports "$((20000 + RANDOM % 30000)):20"
ctl() { "$CTL" --address "127.0.0.1:$L_port" "$@"; }
# One job that already ended (jobs_ended_total) and a non-OK answer (the error-rate panel).
tiny_job "$work/short.yaml" 6
sed -i 's/^name: tiny-sft/name: warmup/' "$work/short.yaml"
printf 'parallel:\n  policy: {data_parallel: 2}\n' >>"$work/short.yaml"
watched="$(ctl submit "$work/short.yaml" --watch)"
first="$(head -1 <<<"$watched")"
check "a first 2-rank job succeeds under mpirun" '[[ "$(state "$L_port" "$first")" == succeeded ]]'
ctl status job-999999 >/dev/null 2>&1
job="$(ctl submit tests/launcher/monitored_job.yaml)"
check "the monitored job runs" 'wait_state "$L_port" "$job" running 60'

# Prometheus from the shipped config: launcher address and 1 s scrapes swapped in.
prom_port=""
for _ in 1 2 3; do
  prom_port=$((20000 + RANDOM % 30000))
  sed -e "s/127.0.0.1:9480/127.0.0.1:$L_http/g" -e "s/scrape_interval: 15s/scrape_interval: 1s/" \
    -e "s/evaluation_interval: 15s/evaluation_interval: 1s/" -e "s/refresh_interval: 15s/refresh_interval: 1s/" \
    deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
  cp deploy/prometheus/alerts.yml "$work/alerts.yml"
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
  prom_pid=$!
  pids+=("$prom_pid")
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
  kill "$prom_pid" 2>/dev/null
done
query() { curl -sf --max-time 5 --get --data-urlencode "query=$1" "http://127.0.0.1:$prom_port/api/v1/query"; }
discovered=0
for _ in $(seq 1 60); do
  if query "up{aln_job_id=\"$job\"} == 1" | grep -q "\"aln_methods\":\"sft,safedpo\""; then discovered=1; break; fi
  sleep 0.5
done
check "Prometheus discovered the job through /sd (up, with the launcher's labels)" '[[ $discovered -eq 1 ]]'

# Wait until the job is in its SafeDPO stage with checkpoints and evaluations, keep RPC traffic
# flowing for the launcher panels, then check every expression.
for _ in $(seq 1 120); do
  ctl list >/dev/null
  query 'aln_checkpoints_total' | grep -q '"value"' && query 'aln_train_metric{name="rewards_margin"}' |
    grep -q '"value"' && query 'aln_eval_metric{stage="safedpo"}' | grep -q '"value"' && break
  sleep 0.5
done
for _ in $(seq 1 10); do ctl list >/dev/null; ctl status "$job" >/dev/null; sleep 0.5; done
"$PY" - "$prom_port" deploy/grafana/dashboards deploy/prometheus/alerts.yml >"$work/exprs.log" 2>&1 <<'PYEOF'
import glob, json, re, sys, urllib.parse, urllib.request
port, dash_dir, rules = sys.argv[1], sys.argv[2], sys.argv[3]
def q(expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return json.load(urllib.request.urlopen(url, timeout=10))
    except urllib.error.HTTPError as e:
        return json.load(e)
names = set(json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/label/__name__/values"))["data"])
# Panels of methods this job does not run: valid, but no data expected.
# (and the pipeline and rollout-rank panels: this job is neither pipelined nor has rollout ranks)
other_methods = ('trainer=~"radpo|tdpo"', 'trainer="hair"', "aln_pipeline_", "aln_rollout_")
bad = 0
for path in sorted(glob.glob(f"{dash_dir}/*.json")):
    for panel in json.load(open(path))["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$job", ".+").replace("${peak_tflops}", "989")
            r = q(expr)
            where = f"{path.split('/')[-1]}: {panel['title']}: {expr}"
            if r.get("status") != "success":
                print("INVALID", where, r.get("error")); bad += 1
            elif not r["data"]["result"]:
                if any(m in expr for m in other_methods):
                    print("no data (method not in this job)", where)
                else:
                    print("NO DATA", where); bad += 1
            else:
                print("ok", where)
text = open(rules).read()
for m in re.finditer(r"expr: (\|\n((?:          .*\n)+)|.*)", text):
    expr = (m.group(2) or m.group(1)).strip()
    r = q(expr)
    # Metric names only: drop label matchers and grouping/matching label lists first.
    bare = re.sub(r"\{[^}]*\}|\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    used = set(re.findall(r"\b(aln_[a-z_]+|up)\b", bare))
    missing = {n for n in used if n not in names}
    if r.get("status") != "success":
        print("INVALID rule", expr, r.get("error")); bad += 1
    elif missing:
        print("NOT EXPORTED", sorted(missing), "in rule", expr); bad += 1
    else:
        print("ok rule", " ".join(expr.split()))
print("bad", bad)
sys.exit(1 if bad else 0)
PYEOF
rc=$?
check "every dashboard and alert expression is valid and has data ($(grep -c '^ok' "$work/exprs.log") ok; $(grep -v '^ok' "$work/exprs.log" | grep -v '^bad' | tr '\n' ';'))" '[[ $rc -eq 0 ]]'
grep -E "^(no data|NO DATA|INVALID|NOT)" "$work/exprs.log"
ctl cancel "$job" >/dev/null
check "the monitored job is cancelled" 'wait_state "$L_port" "$job" cancelled 30'
finish
