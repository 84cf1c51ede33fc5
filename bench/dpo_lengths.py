"""How the DPO step's time grows with sequence length: bench/dpo_step.py at several lengths, one after another,
with the step time per length and its growth per doubling for each framework.

Issue #26 asks that the step time grow no worse than ~2.2x per doubling of length up to 1,024 tokens. Two sweeps:
  prompts    the prompt grows (96, 224, 480, 992 tokens) and the responses stay at 32: the whole sequence doubles
             (128 -> 1,024 tokens), the part the output projection scores does not;
  responses  prompt and responses grow together (96 + 32, 192 + 64, 384 + 128): the scored part doubles too.
             HH-RLHF's test split holds few responses past 128 tokens, so this sweep ends at 512 tokens (13 pairs
             there: dpo_step.py keeps whole batches, so one batch of 8 is used for every step).
Step time = the median step's seconds (dpo_step.py's median_step_seconds).
Prompts longer than a dialogue are preceded by the dialogues read before it (dpo_step.py --fill-prompts).

  .venv/bin/python bench/dpo_lengths.py [--sweep prompts|responses] [--frameworks aln,torch] [--steps 12]
                                        [--hidden 64] [--out dpo_lengths.json]
Every other flag is passed to dpo_step.py as given (its --settings default here: cached_reference).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SWEEPS = {"prompts": [(96, 32), (224, 32), (480, 32), (992, 32)],
          "responses": [(96, 32), (192, 64), (384, 128)]}
GOAL_GROWTH_PER_DOUBLING = 2.2


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweep", choices=sorted(SWEEPS), default="prompts")
    p.add_argument("--frameworks", default="aln,torch")
    p.add_argument("--settings", default="cached_reference")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="")
    args, rest = p.parse_known_args()
    frameworks = [f for f in args.frameworks.split(",") if f]
    result = {"sweep": args.sweep, "lengths": [], "goal": {"growth_per_doubling_at_most": GOAL_GROWTH_PER_DOUBLING},
              "step_ms": {}, "growth_per_doubling": {}, "ratio_aln_over": {}}
    with tempfile.TemporaryDirectory(prefix="aln-dpo-lengths-") as work:
        for prompt, response in SWEEPS[args.sweep]:
            out = os.path.join(work, f"{prompt}_{response}.json")
            cmd = [sys.executable, os.path.join(HERE, "dpo_step.py"), "--fill-prompts", "--prompt-length", str(prompt),
                   "--response-length", str(response), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--settings", args.settings, "--frameworks", args.frameworks, "--out", out, *rest]
            print(f"[dpo_lengths] {prompt} + {response} tokens ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(out) as f:
                run = json.load(f)
            result["lengths"].append({"prompt": prompt, "response": response, "pairs": run["config"]["pairs"],
                                      "host": run["host"]})
            for setting, entry in run["settings"].items():
                for fw in frameworks:
                    side = entry.get(fw) or {}
                    ms = 1000.0 * side["median_step_seconds"] if side.get("median_step_seconds") else None
                    result["step_ms"].setdefault(setting, {}).setdefault(fw, []).append(ms)
    for setting, per_fw in result["step_ms"].items():
        for fw, times in per_fw.items():
            growth = [b / a if a and b else None for a, b in zip(times, times[1:])]
            result["growth_per_doubling"].setdefault(setting, {})[fw] = growth
            if fw != "aln" and "aln" in per_fw:
                result["ratio_aln_over"].setdefault(setting, {})[fw] = [
                    o / a if a and o else None for a, o in zip(per_fw["aln"], times)]  # speed: peer time / Aln time
    aln_growth = [g for s in result["growth_per_doubling"].values() for g in s.get("aln", [])]
    result["met"] = bool(aln_growth) and all(g is not None and g <= GOAL_GROWTH_PER_DOUBLING for g in aln_growth)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
