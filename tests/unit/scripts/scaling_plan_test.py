#!/usr/bin/env python3
"""scripts/scaling_plan.py: its memory model against hand-computed numbers for one case, and the
orderings any sharding plan must show (more sharding never holds more; more GPUs never hold more
when something is sharded), and bad inputs refused with a message."""
import argparse
import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("scaling_plan", ROOT / "scripts" / "scaling_plan.py")
plan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plan)

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


# Llama-3-8B has 8.03e9 parameters with untied embeddings.
n = plan.parameters(plan.MODELS["8B"])["total"]
check(abs(n - 8.03e9) / 8.03e9 < 0.01, f"8B parameter count {n}")
n70 = plan.parameters(plan.MODELS["70B"])["total"]
check(abs(n70 - 70.55e9) / 70.55e9 < 0.01, f"70B parameter count {n70}")

# Unsharded: 16 bytes a parameter plus a bf16 reference.
m = plan.memory_bytes(plan.MODELS["8B"], "none", 8, False, 1, 1)
check(m["weights"] + m["gradients"] + m["optimizer"] == 16 * n, "16 bytes a parameter unsharded")
check(m["reference"] == 2 * n, "bf16 reference")
# Full sharding over 8: (16 N) / 8 plus two gathered layers.
f = plan.memory_bytes(plan.MODELS["8B"], "full", 8, True, 1, 1)
layer = plan.parameters(plan.MODELS["8B"])["per_layer"]
check(abs(f["weights"] + f["gradients"] + f["optimizer"] - 2 * n) < 1, "full: 16 N / 8")
check(f["gathered_layers"] == 4 * layer, "full: two bf16 layers gathered")

args = argparse.Namespace(
    gpus=[8, 16, 64], gpu_gib=80, usable=0.9, micro_batch=2, seq=2048, accumulation=4, mfu=0.45, peak_tflops=790,
    busbw_intra=360, busbw_inter=45, gpus_per_node=8, overlap=0.5)
rows = plan.plan(args)
by = {(r["model"], r["gpus"], r["shard"]): r for r in rows}
for model in plan.MODELS:
    for g in args.gpus:
        totals = [by[(model, g, level)]["memory_gib"]["total"] for level in plan.LEVELS]
        check(totals == sorted(totals, reverse=True), f"{model} on {g}: more sharding holds less {totals}")
        # ZeRO-2 moves the bytes of an all-reduce; ZeRO-1 1.5 times that.
        none, zero1, zero2 = (by[(model, g, level)]["moved_gib"] for level in ("none", "optimizer", "gradients"))
        check(abs(zero2 - none) < 1e-9 and abs(zero1 - 1.5 * none) < 1e-9, f"{model} on {g}: traffic ratios")
        # ZeRO-3: forward and backward gathers plus a reduce-scatter (1.5x), for every micro-batch, plus
        # the sharded reference's gathers (0.5x).
        full = by[(model, g, "full")]["moved_gib"]
        check(abs(full - 2.0 * none * args.accumulation) < 1e-6, f"{model} on {g}: full sharding's traffic {full}")
    for level in plan.LEVELS[1:]:
        totals = [by[(model, g, level)]["memory_gib"]["total"] for g in args.gpus]
        check(totals == sorted(totals, reverse=True), f"{model} {level}: more GPUs hold less {totals}")
check(by[("8B", 8, "optimizer")]["fits"] and not by[("8B", 8, "none")]["fits"], "8B on 8: ZeRO-1 fits, DDP does not")
check(not by[("70B", 16, "full")]["fits"] and by[("70B", 64, "full")]["fits"], "70B: full sharding fits on 64, not 16")

bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "scaling_plan.py"), "--mfu", "0"], capture_output=True,
                     text=True)
check(bad.returncode == 2 and "--mfu must be in (0, 1]" in bad.stderr, f"bad --mfu refused: {bad.stderr!r}")
out = subprocess.run([sys.executable, str(ROOT / "scripts" / "scaling_plan.py")], capture_output=True, text=True)
check(out.returncode == 0 and "| 70B | 64 | full |" in out.stdout, "markdown table printed")

for f in failures:
    print("FAIL:", f)
print(f"scaling_plan: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
