#!/usr/bin/env python3
"""Keeps the engine readable: no function in trainers/engine/ longer than 120 lines, run_job shorter
than 60 (docs/architecture.md says why). A function is counted from the first line of its
signature (at column 0) to its closing brace at column 0. Exit 1 naming every offender."""
import glob
import os
import sys

LIMIT, RUN_JOB_LIMIT = 120, 60
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
bad = []
longest = (0, "")
for path in sorted(glob.glob(os.path.join(root, "trainers/engine/*.cpp"))):
    lines = open(path).read().split("\n")
    start = None
    for i, line in enumerate(lines):
        top = line[:1] not in ("", " ", "}", "#", "/") and not line.startswith(("namespace", "using", "class", "struct"))
        if start is None and top:
            start = i
        if start is not None and line.endswith(";") and not line.startswith(" ") and "{" not in line:
            start = None  # a declaration or a one-line definition at namespace level
        if line == "}" and start is not None:
            n = i - start + 1
            name = lines[start].split("(")[0].split()[-1] if "(" in lines[start] else lines[start][:40]
            limit = RUN_JOB_LIMIT if name.endswith("run_job") else LIMIT
            longest = max(longest, (n, f"{os.path.basename(path)}:{start + 1} {name}"))
            if n > limit:
                bad.append(f"{os.path.relpath(path, root)}:{start + 1}: {name} is {n} lines (limit {limit})")
            start = None
        if line.startswith("}  // namespace"):
            start = None
for b in bad:
    print(b)
print(f"longest function in trainers/engine: {longest[1]} ({longest[0]} lines)")
sys.exit(1 if bad else 0)
