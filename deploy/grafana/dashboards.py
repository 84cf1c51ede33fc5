#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ (edit this file, then run it; the JSON is committed).

Four dashboards on the Prometheus data source provisioned as uid `aln-prometheus`:
job overview, training health per method, performance, and the launcher. Every PromQL expression
here is checked against a real Prometheus scraping a real job by tests/launcher/monitoring_test.sh.
"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "aln-prometheus"}
HERE = pathlib.Path(__file__).resolve().parent
JOB = 'job=~"$job"'


def panel(title, exprs, unit="short", kind="timeseries", width=12, height=8, legend="{{job}} {{stage}}",
          description=""):
    if isinstance(exprs, str):
        exprs = [exprs]
    targets = []
    for i, e in enumerate(exprs):
        expr, fmt = (e, legend) if isinstance(e, str) else e
        targets.append({"datasource": DS, "expr": expr, "legendFormat": fmt, "refId": chr(ord("A") + i)})
    return {"type": kind, "title": title, "description": description, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
            "gridPos": {"w": width, "h": height}}


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def layout(panels):
    x = y = h_row = 0
    for i, p in enumerate(panels):
        p["id"] = i + 1
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y = 0, y + h_row
            h_row = 0
        p["gridPos"].update({"x": x, "y": y})
        x += w
        h_row = max(h_row, h)
        if p["type"] == "row":
            x, y, h_row = 0, y + h, 0
    return panels


def job_variable():
    return {"name": "job", "label": "job", "type": "query", "datasource": DS,
            "query": {"query": "label_values(aln_train_steps_total, job)", "refId": "job"},
            "definition": "label_values(aln_train_steps_total, job)", "includeAll": True, "multi": True,
            "allValue": ".+", "current": {"text": "All", "value": "$__all"}, "refresh": 2}


def dashboard(uid, title, panels, variables=(), description=""):
    return {"uid": uid, "title": title, "description": description, "tags": ["aln"], "timezone": "browser",
            "schemaVersion": 38, "version": 1, "editable": True, "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"}, "templating": {"list": list(variables)},
            "annotations": {"list": []}, "panels": layout(panels)}


overview = dashboard("aln-job-overview", "Aln / Job overview", [
    panel("Jobs by state (launcher)", 'sum by (state) (aln_launcher_jobs)', legend="{{state}}", width=8),
    panel("Queue depth", "aln_launcher_queue_depth", legend="queued", width=8),
    panel("Job targets up", 'up{aln_job_id!=""}', legend="{{aln_job_id}} {{aln_job_name}}", width=8,
          description="1 while the job's rank 0 serves /metrics (found through the launcher's service discovery)"),
    panel("Optimizer steps", f"sum by (job, stage) (aln_train_steps_total{{{JOB}}})"),
    panel("Training loss", f"aln_train_loss{{{JOB}}}"),
    panel("Tokens per second", f"sum by (job, stage) (aln_train_tokens_per_second{{{JOB}}})"),
    panel("Held-out metrics", f"aln_eval_metric{{{JOB}}}", legend="{{job}} {{stage}} {{name}}"),
], [job_variable()], "What runs, how far each job is, and whether its loss goes down.")

health = dashboard("aln-training-health", "Aln / Training health", [
    row("All methods"),
    panel("Loss", f"aln_train_loss{{{JOB}}}"),
    panel("Gradient norm (before clipping)", f"aln_train_grad_norm{{{JOB}}}"),
    panel("Learning rate", f"aln_train_learning_rate{{{JOB}}}", width=8),
    panel("Non-finite steps skipped", f"aln_train_nonfinite_steps_total{{{JOB}}}", width=8),
    panel("Data records by outcome", f"aln_data_records{{{JOB}}}", legend="{{stage}} {{outcome}}", width=8),
    panel("Held-out metrics", f"aln_eval_metric{{{JOB}}}", legend="{{stage}} {{name}}", width=24),
    row("Preference methods (DPO family, SafeDPO)"),
    panel("Reward margin", f'aln_train_metric{{{JOB}, name="rewards_margin"}}'),
    panel("Reward accuracy", f'aln_train_metric{{{JOB}, name="rewards_accuracy"}}', unit="percentunit"),
    panel("Implicit rewards", [(f'aln_train_metric{{{JOB}, name="rewards_chosen"}}', "{{stage}} chosen"),
                               (f'aln_train_metric{{{JOB}, name="rewards_rejected"}}', "{{stage}} rejected")]),
    panel("KL estimate to the reference", f'aln_train_metric{{{JOB}, name="kl_estimate"}}'),
    panel("SafeDPO: pairs kept, swapped, dropped",
          f'aln_data_records{{{JOB}, outcome=~"safedpo_.*"}}', legend="{{stage}} {{outcome}}", width=24),
    row("Supervised fine-tuning"),
    panel("Negative log-likelihood per response token", f'aln_train_metric{{{JOB}, name="nll"}}'),
    panel("Response tokens per step", f'aln_train_metric{{{JOB}, name="response_tokens"}}'),
    row("Ra-DPO / TDPO and HAIR (metrics appear when these trainers run)"),
    panel("Ra-DPO / TDPO: risk and sequential-KL terms",
          f'aln_train_metric{{{JOB}, trainer=~"radpo|tdpo"}}', legend="{{stage}} {{name}}"),
    panel("HAIR: hardness weights and per-category rewards",
          f'aln_train_metric{{{JOB}, trainer="hair"}}', legend="{{stage}} {{name}}"),
    row("Rollout ranks (parallel.rollout.ranks; metrics appear when a job has them)"),
    panel("Share of policy-rank time waiting for rollouts",
          f"rate(aln_rollout_wait_seconds_total{{{JOB}}}[1m])", unit="percentunit", legend="{{job}} rank {{rank}}",
          description="Seconds per second a policy rank waited for its rollout rank (weights sent and generation)."),
    panel("Sequences generated per second by rollout rank",
          f"rate(aln_rollout_sequences_total{{{JOB}}}[1m])", legend="{{job}} rank {{rank}}"),
], [job_variable()], "Per-method training signals: losses, reward margins and accuracy, KL, method panels.")

perf = dashboard("aln-performance", "Aln / Performance", [
    panel("Tokens per second", f"sum by (job) (aln_train_tokens_per_second{{{JOB}}})", legend="{{job}}", width=8),
    panel("Samples per second", f"sum by (job) (aln_train_samples_per_second{{{JOB}}})", legend="{{job}}", width=8),
    panel("Estimated model TFLOP/s (6 x parameters x tokens/s)",
          f"6 * sum by (job) (aln_train_tokens_per_second{{{JOB}}}) * on (job) "
          f"max by (job) (aln_model_parameters{{{JOB}}}) / 1e12", legend="{{job}}", width=8),
    panel("MFU (against the peak TFLOP/s per rank set above)",
          f"6 * sum by (job) (aln_train_tokens_per_second{{{JOB}}}) * on (job) "
          f"max by (job) (aln_model_parameters{{{JOB}}}) / 1e12 / on (job) "
          f"(${{peak_tflops}} * max by (job) (aln_data_parallel_size{{{JOB}}}))", unit="percentunit", legend="{{job}}",
          description="Training FLOPs estimated as 6 x parameters per token (attention FLOPs left out)."),
    panel("Step phases (last step)", f"aln_step_phase_seconds{{{JOB}}}", unit="s", legend="{{job}} {{phase}}"),
    panel("Communication seconds per rank", f"aln_rank_communication_seconds{{{JOB}}}", unit="s",
          legend="{{job}} rank {{rank}}"),
    panel("Compute seconds per rank", f"aln_rank_compute_seconds{{{JOB}}}", unit="s", legend="{{job}} rank {{rank}}"),
    panel("Peak resident memory", f"aln_process_peak_rss_bytes{{{JOB}}}", unit="bytes", legend="{{job}} rank {{rank}}"),
    panel("Heartbeat age per rank (rank 0 ends the job past 2 x timeout_s)",
          f"aln_rank_heartbeat_age_seconds{{{JOB}}}", unit="s", legend="{{job}} rank {{peer_rank}} {{peer_role}}"),
    panel("Pipeline bubble per stage (measured) and theoretical",
          [(f"aln_pipeline_bubble_fraction{{{JOB}}}", "{{job}} stage {{pipeline_stage}}"),
           (f"aln_pipeline_bubble_theoretical{{{JOB}}}", "{{job}} (p - 1) / (m + p - 1)")], unit="percentunit"),
    panel("Checkpoint duration", f"aln_checkpoint_seconds{{{JOB}}}", unit="s", legend="{{job}}"),
], [job_variable(),
    {"name": "peak_tflops", "label": "peak TFLOP/s per rank", "type": "textbox", "query": "989",
     "current": {"text": "989", "value": "989"}}],
    "Throughput, estimated FLOP rate and MFU, step phases, communication and memory.")

launcher = dashboard("aln-launcher", "Aln / Launcher", [
    panel("Requests per second by method", "sum by (method) (rate(aln_launcher_rpcs_total[1m]))",
          unit="reqps", legend="{{method}}"),
    panel("Non-OK answers per second", 'sum by (method, code) (rate(aln_launcher_rpcs_total{code!="OK"}[5m]))',
          unit="reqps", legend="{{method}} {{code}}"),
    panel("p99 latency of unary RPCs",
          "histogram_quantile(0.99, sum by (le, method) (rate(aln_launcher_rpc_duration_seconds_bucket[5m])))",
          unit="s", legend="{{method}}"),
    panel("Jobs by state", "sum by (state) (aln_launcher_jobs)", legend="{{state}}"),
    panel("Queue depth and free slots", [("aln_launcher_queue_depth", "queued"), ("aln_launcher_free_slots", "free slots")],
          width=8),
    panel("Open streams (watch, logs)", "aln_launcher_open_streams", legend="streams", width=8),
    panel("Jobs ended (last hour)", "sum by (state) (increase(aln_launcher_jobs_ended_total[1h]))",
          legend="{{state}}", width=8),
], [], "The launcher's queue, jobs and RPC traffic.")

if __name__ == "__main__":
    for name, d in [("aln-job-overview", overview), ("aln-training-health", health), ("aln-performance", perf),
                    ("aln-launcher", launcher)]:
        (HERE / "dashboards" / f"{name}.json").write_text(json.dumps(d, indent=2) + "\n")
        print(f"wrote dashboards/{name}.json ({len(d['panels'])} panels)")
