"""The Python oracles import from the project environment and agree with the repo's real data.

Later parity tests (models, tokenizer, losses) compare Aln against these libraries, so this test
pins down that they are present, are the locked versions, and read the shipped GPT-2 tokenizer.
"""
import os
import sys

failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(name)


lock = {}
with open(os.path.join("scripts", "requirements.lock")) as f:
    for line in f:
        if "==" in line:
            name, version = line.strip().split("==")
            lock[name.lower()] = version

import numpy  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402

for module, dist in [(numpy, "numpy"), (safetensors, "safetensors"), (tokenizers, "tokenizers"),
                     (torch, "torch"), (transformers, "transformers"), (trl, "trl")]:
    version = module.__version__.split("+")[0]
    check(f"{dist} {version} is the locked version", version == lock.get(dist), f"lock has {lock.get(dist)}")

check("the interpreter is the project venv", sys.prefix != sys.base_prefix, sys.prefix)

tok = tokenizers.Tokenizer.from_file("examples/data/tokenizers/gpt2/tokenizer.json")
check("GPT-2 tokenizer: 'Hello world'", tok.encode("Hello world").ids == [15496, 995], str(tok.encode("Hello world").ids))
check("GPT-2 tokenizer vocab size", tok.get_vocab_size() == 50257, str(tok.get_vocab_size()))

# torch on the CPU computes the op Aln's first kernel implements; the C++ tests check the same identity.
logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
lp = torch.log_softmax(logits, -1)[0, 2].item()
check("torch log_softmax of uniform logits", abs(lp + numpy.log(4.0)) < 1e-15, str(lp))

print(f"{8 + 2 - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
