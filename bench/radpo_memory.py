#!/usr/bin/env python3
"""Ra-DPO memory: one training step (forward + backward, CVaR, variant 2) on 2 pairs of 512-token
sequences (256 prompt + 256 response tokens) with GPT-2's 50,257-token vocabulary, each mode in its
own process (peak RSS is per process): Aln's chunked path at several chunk sizes and the direct way
(full [positions, vocab] logits of both models kept for autograd, as the official PyTorch code
computes them). Writes JSON with the peaks, times and ratios; checks the modes agree on the loss.

    .venv/bin/python bench/radpo_memory.py --out radpo_memory.json   # about 30 s
"""
import argparse
import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
parser = argparse.ArgumentParser()
parser.add_argument("--bin", default=str(ROOT / "build" / "bin" / "radpo_memory"))
parser.add_argument("--out", default="radpo_memory.json")
parser.add_argument("--chunks", default="16,64,256")
args = parser.parse_args()


def run(*argv):
    out = subprocess.run([args.bin, *argv], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


direct = run("direct")
chunked = [run("chunked", "--chunk", c) for c in args.chunks.split(",")]
for c in chunked:
    c["step_peak_ratio_to_direct"] = round(c["step_peak_mib"] / direct["step_peak_mib"], 4)
    c["time_ratio_to_direct"] = round(c["seconds"] / direct["seconds"], 4)
    c["loss_relative_difference"] = abs(c["loss"] - direct["loss"]) / abs(direct["loss"])
result = {"direct": direct, "chunked": chunked,
          "note": "step_peak_mib = peak RSS during the step minus the peak before it (models, batch, LibTorch)"}
pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
assert all(c["loss_relative_difference"] < 1e-4 for c in chunked), "chunked and direct losses disagree"
