"""Shared by the parity scripts: named checks that print ok/FAIL, a summary and the exit code, and
the max relative difference used for tolerances."""
import sys

import torch

failures, _count = [], [0]


def check(name, ok, detail=""):
    _count[0] += 1
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(name)


def rel(a, b):
    """max |a - b| / max |b| (b is the reference)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def finish():
    print(f"{_count[0] - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
