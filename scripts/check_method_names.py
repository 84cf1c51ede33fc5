#!/usr/bin/env python3
"""Method names live with their methods: outside trainers/<method>/, trainers/register_all.cpp, the
proto, kernels/ (the losses, named after the papers), docs and tests, no C++ code names a method —
no "dpo" literal, no has_grpo() or .hair() accessor, no controllable:: call, no include of a method's
folder. What the rest of Aln must know about a method is declared on its options in job.proto
(aln.v1.MethodTraits, read by core/config/method_traits.h) or answered by register_all.cpp.
"reward" is not checked as a word: it is also the reward role's name. Exit 1 naming every line."""
import glob
import os
import re
import sys

METHODS = ["sft", "dpo", "safedpo", "tdpo", "radpo", "grpo", "ptalign", "controllable", "hair"]
# Known exceptions, each with its reason (the test fails when one is no longer needed, too).
ALLOWED = {
    "trainers/cli/generate_command.cpp":
        "`aln generate --control` is the controllable method's own interface (control prefixes, level scales)",
}
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
words = "|".join(METHODS)
patterns = [
    re.compile(r'"(%s)"' % words),                        # a name as a string
    re.compile(r"\bhas_(%s|reward)\(\)" % words),          # which oneof field a TrainerSpec holds
    re.compile(r"\.(%s)\(\)" % words),                     # a method's options
    re.compile(r"\b(%s)::" % words),                       # a method's namespace
    re.compile(r'#include "trainers/(%s|reward)/' % words),  # a method's folder
]
bad, used = [], set()
for folder in ["core", "distributed", "launcher", "trainers"]:
    for path in sorted(glob.glob(os.path.join(root, folder, "**", "*.[ch]*"), recursive=True)):
        rel = os.path.relpath(path, root)
        parts = rel.split(os.sep)
        if not rel.endswith((".cpp", ".h")) or rel == "trainers/register_all.cpp":
            continue
        if parts[0] == "trainers" and len(parts) > 2 and parts[1] in METHODS + ["reward"]:
            continue
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            code = line.split("//")[0]
            if any(p.search(code) for p in patterns):
                if rel in ALLOWED:
                    used.add(rel)
                else:
                    bad.append(f"{rel}:{number}: {line.strip()}")
for rel in sorted(set(ALLOWED) - used):
    bad.append(f"{rel}: allowed to name a method but no longer does; remove it from ALLOWED")
for line in bad:
    print(line)
if bad:
    print(f"{len(bad)} lines name a method outside its folder; declare what is needed in job.proto "
          "(MethodTraits) or answer it in trainers/register_all.cpp")
    sys.exit(1)
print("method names: only in their folders, register_all.cpp, the proto, kernels, docs and tests")
