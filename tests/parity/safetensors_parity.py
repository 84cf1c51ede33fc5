"""Aln's safetensors reader/writer (core/io/) against Python's safetensors and huggingface_hub.

Usage: safetensors_parity.py TOOL   (TOOL = build/bin/safetensors_tool)
1. Files written by safetensors.torch.save_file (all ten dtypes, scalars, empty tensors, metadata) load in
   C++ with the same names, dtypes, shapes and raw bytes (sha256).
2. Files our writer produces load in Python with bitwise-equal values and are byte-identical to Python's.
3. Sharded checkpoints: huggingface_hub.save_torch_state_dict's shards load in C++; our resharding gives the
   same split, the same weight_map and byte-identical shard files, which Python loads back.
4. Malformed files Python rejects are rejected by us too.
"""
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
from huggingface_hub import save_torch_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TOOL = sys.argv[1]
torch.manual_seed(0)
failures = []
checks = 0


def check(name, ok, detail=""):
    global checks
    checks += 1
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(name)


def run_tool(commands):
    """Runs all commands in one `safetensors_tool batch` (LibTorch loads once); returns their results."""
    stdin = "".join("\t".join(c) + "\n" for c in commands)
    proc = subprocess.run([TOOL, "batch"], input=stdin, capture_output=True, text=True, check=True)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(commands), proc.stderr
    for command, result in zip(commands, results):
        if not result["ok"]:
            raise RuntimeError(f"{' '.join(command)}: {result['error']}")
    return [r["result"] for r in results]


DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL"}


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def describe(tensors):
    return {name: {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "sha256": hashlib.sha256(raw(t)).hexdigest()}
            for name, t in tensors.items()}


def sample_tensors():
    out = {}
    for dtype in DTYPE_NAMES:
        if dtype.is_floating_point:
            t = torch.randn(5, 7, dtype=torch.float32).to(dtype)
        elif dtype == torch.bool:
            t = torch.rand(5, 7) > 0.5
        else:
            info = torch.iinfo(dtype)
            t = torch.randint(info.min, info.max, (5, 7), dtype=torch.int64).to(dtype)
        out[f"w.{DTYPE_NAMES[dtype].lower()}"] = t
    out["special"] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45])
    out["scalar.bf16"] = torch.tensor(2.5, dtype=torch.bfloat16)
    out["scalar.i64"] = torch.tensor(-7, dtype=torch.int64)
    out["empty"] = torch.zeros(0, 3, dtype=torch.float16)
    out["empty.i8"] = torch.zeros(4, 0, dtype=torch.int8)
    out["ünïcode name"] = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    return out


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def header_file(header, data=b"", declared=None):
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if declared is None else declared) + body + data


MALFORMED = {
    "short file": b"\x01\x02",
    "header past end": header_file({}, declared=1000),
    "not json": header_file(b"{not json"),
    "unknown dtype": header_file({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
    "size mismatch": header_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
    "end past buffer": header_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 2),
    "hole": header_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"\0" * 2),
    "overlap": header_file({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                            "b": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"\0" * 2),
    "negative dim": header_file({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}),
}

with tempfile.TemporaryDirectory() as tmp:
    # Python writes everything first, then one tool run does all C++ work, then Python checks.
    tensors = sample_tensors()
    variants = [("one metadata key", {"format": "pt"}),
                ("several metadata keys", {"format": "pt", "b": "x\n\"y\"", "a": "é"}),
                ("no metadata", None)]
    commands = []
    for i, (label, metadata) in enumerate(variants):
        save_file(tensors, os.path.join(tmp, f"py{i}.safetensors"), metadata=metadata)
        py_file, ours = os.path.join(tmp, f"py{i}.safetensors"), os.path.join(tmp, f"ours{i}.safetensors")
        commands += [["dump", py_file], ["roundtrip", py_file, ours]]

    state = {f"model.layers.{i:02d}.weight": torch.randn(16, 8) for i in range(6)}
    state["model.embed"] = torch.randn(64, 16).to(torch.bfloat16)
    state["model.norm"] = torch.ones(16, dtype=torch.float16)
    state["lm_head.ids"] = torch.arange(10)
    state = dict(sorted(state.items()))  # the C++ tool iterates names in sorted order; so must the split
    max_shard = 1100
    hub_dir, ours_dir = os.path.join(tmp, "hub"), os.path.join(tmp, "ours")
    os.makedirs(hub_dir)
    os.makedirs(ours_dir)
    save_torch_state_dict(state, hub_dir, max_shard_size=max_shard)
    commands.append(["dump-checkpoint", hub_dir])
    commands.append(["reshard", hub_dir, ours_dir, str(max_shard)])

    for i, content in enumerate(MALFORMED.values()):
        with open(os.path.join(tmp, f"bad{i}.safetensors"), "wb") as f:
            f.write(content)
        commands.append(["check", os.path.join(tmp, f"bad{i}.safetensors")])

    results = iter(run_tool(commands))

    # 1 + 2. Python -> C++ -> Python.
    for i, (label, metadata) in enumerate(variants):
        dumped = next(results)
        next(results)  # roundtrip
        check(f"python -> C++ tensors ({label})", dumped["tensors"] == describe(tensors))
        check(f"python -> C++ metadata ({label})", dumped["metadata"] == (metadata or {}), str(dumped["metadata"]))
        py_file, ours = os.path.join(tmp, f"py{i}.safetensors"), os.path.join(tmp, f"ours{i}.safetensors")
        back = load_file(ours)
        same = back.keys() == tensors.keys() and all(back[k].dtype == t.dtype and back[k].shape == t.shape
                                                     and raw(back[k]) == raw(t) for k, t in tensors.items())
        check(f"C++ -> python values bitwise ({label})", same)
        if metadata is None or len(metadata) <= 1:  # Python orders several metadata keys by a random hash
            check(f"C++ output byte-identical to python's ({label})", read_bytes(ours) == read_bytes(py_file))
        else:
            with safe_open(ours, "pt") as f:
                check(f"C++ metadata loads in python ({label})", f.metadata() == metadata, str(f.metadata()))

    # 3. Sharded checkpoints, both ways.
    dumped = next(results)
    next(results)  # reshard
    check("huggingface_hub shards -> C++ tensors", dumped["tensors"] == describe(state))
    with open(os.path.join(hub_dir, "model.safetensors.index.json")) as f:
        hub_index = json.load(f)
    check("huggingface_hub index -> C++ metadata",
          dumped["metadata"] == {"total_size": str(hub_index["metadata"]["total_size"])}, str(dumped["metadata"]))
    with open(os.path.join(ours_dir, "model.safetensors.index.json")) as f:
        our_index = json.load(f)
    shard_files = sorted(set(hub_index["weight_map"].values()))
    check("C++ split == huggingface_hub split", our_index["weight_map"] == hub_index["weight_map"],
          f"{len(shard_files)} shards")
    check("C++ index total_size", our_index["metadata"]["total_size"] == hub_index["metadata"]["total_size"])
    check("C++ shard files byte-identical", all(
        read_bytes(os.path.join(ours_dir, s)) == read_bytes(os.path.join(hub_dir, s)) for s in shard_files))
    loaded = {}
    for s in sorted(set(our_index["weight_map"].values())):
        loaded.update(load_file(os.path.join(ours_dir, s)))
    check("C++ shards -> python values",
          loaded.keys() == state.keys() and all(raw(loaded[k]) == raw(v) for k, v in state.items()))

    # 4. Malformed files: Python refuses them, so must we.
    for i, label in enumerate(MALFORMED):
        ours = next(results)
        try:
            load_file(os.path.join(tmp, f"bad{i}.safetensors"))
            python_rejects = False
        except Exception:
            python_rejects = True
        check(f"malformed ({label}) rejected by both", python_rejects and not ours["ok"], ours["error"])

print(f"{checks - len(failures)}/{checks} checks passed")
sys.exit(1 if failures else 0)
