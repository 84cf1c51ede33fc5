#!/usr/bin/env python3
"""A scaling plan for DPO-style training of large policies: memory per GPU for each sharding choice,
bytes each GPU moves per step, and a predicted step time. A simulation from stated formulas and
inputs, not a measurement; docs/scaling.md explains each term and prints this script's output.

  python3 scripts/scaling_plan.py                      # the tables in docs/scaling.md (markdown)
  python3 scripts/scaling_plan.py --json               # the same numbers as JSON
  python3 scripts/scaling_plan.py --busbw-intra 300 --busbw-inter 40 --mfu 0.40   # your cluster's numbers

Memory per parameter of the trained policy (bf16 compute over float32 master weights, AdamW):
2 bytes bf16 weights, 2 bytes bf16 gradients, 12 bytes float32 master copy and two moments (the
16 bytes a parameter of the ZeRO paper). The frozen reference holds 2 bytes a parameter in bf16.
"""
import argparse
import json
import sys

GIB = 1024**3

# Llama-3 shapes: layers, hidden, MLP width, vocabulary, attention heads, key/value heads.
MODELS = {
    "8B": dict(layers=32, hidden=4096, ffn=14336, vocab=128256, heads=32, kv_heads=8),
    "70B": dict(layers=80, hidden=8192, ffn=28672, vocab=128256, heads=64, kv_heads=8),
}
LEVELS = ["none", "optimizer", "gradients", "full"]


def parameters(m):
    h, f, v, kv = m["hidden"], m["ffn"], m["vocab"], m["kv_heads"]
    head_dim = h // m["heads"]
    attention = h * h * 2 + h * kv * head_dim * 2  # q, o; k, v
    mlp = 3 * h * f
    per_layer = attention + mlp + 2 * h  # two RMSNorms
    return dict(per_layer=per_layer, total=m["layers"] * per_layer + 2 * v * h + h)  # untied embedding and head


def memory_bytes(m, level, gpus, reference_sharded, micro_batch, seq):
    """Bytes one GPU holds at the step's peak (pure data parallelism over `gpus`)."""
    p = parameters(m)
    n, layer = p["total"], p["per_layer"]
    weights, grads, optimizer = 2 * n, 2 * n, 12 * n
    if level in ("optimizer", "gradients", "full"):
        optimizer /= gpus
    if level in ("gradients", "full"):
        grads /= gpus
    gathered = 0
    if level == "full":
        weights /= gpus
        gathered = 2 * 2 * layer  # the layer computing and the next one prefetched, in bf16
    reference = 2 * n / (gpus if reference_sharded else 1)
    # Activations with every layer checkpointed: each layer's bf16 input kept, one layer's
    # intermediates alive during its recompute (about 34 bytes per token and hidden unit with a fused
    # attention kernel that keeps no [seq, seq] scores), the log-prob head fused and chunked.
    tokens = micro_batch * seq
    activations = 2 * tokens * m["hidden"] * m["layers"] + 34 * tokens * m["hidden"]
    total = weights + grads + optimizer + gathered + reference + activations
    return dict(weights=weights, gradients=grads, optimizer=optimizer, gathered_layers=gathered, reference=reference,
                activations=activations, total=total)


def bytes_moved(m, level, gpus, reference_sharded, accumulation):
    """Bytes each GPU sends per optimizer step (ring algorithms: (g - 1) / g of the buffer per pass).
    ZeRO-3 gathers the weights (and reduce-scatters the gradients) again for every micro-batch."""
    n = parameters(m)["total"]
    ring = (gpus - 1) / gpus
    grads, params = 2 * n, 2 * n
    moved = {
        "none": 2 * ring * grads,  # all-reduce of the gradients
        "optimizer": 2 * ring * grads + ring * params,  # all-reduce, then all-gather of the updated weights
        "gradients": ring * grads + ring * params,  # reduce-scatter, all-gather
        "full": ring * params * 2 + ring * grads,  # all-gather in forward and in backward, reduce-scatter
    }[level]
    if reference_sharded:
        moved += ring * params  # the reference's forward all-gathers its layers too
    if level == "full":
        moved *= accumulation
    return moved


def step_seconds(m, level, gpus, reference_sharded, args):
    """Compute at a stated model-FLOPs utilisation plus the communication that does not overlap."""
    n = parameters(m)["total"]
    tokens = args.micro_batch * args.seq * args.accumulation
    # DPO: policy forward + backward (6 N a token) and reference forward (2 N a token).
    compute = 8 * n * tokens / (args.mfu * args.peak_tflops * 1e12)
    busbw = args.busbw_intra if gpus <= args.gpus_per_node else args.busbw_inter
    comm = bytes_moved(m, level, gpus, reference_sharded, args.accumulation) / (busbw * 1e9)
    # A share `overlap` of it hides behind compute.
    exposed = comm * (1 - args.overlap)
    return dict(compute=compute, communication=comm, step=compute + exposed,
                tokens_per_second_per_gpu=tokens / (compute + exposed))


def plan(args):
    rows = []
    for name, m in MODELS.items():
        for gpus in args.gpus:
            for level in LEVELS:
                reference_sharded = level == "full"
                mem = memory_bytes(m, level, gpus, reference_sharded, args.micro_batch, args.seq)
                rows.append(dict(model=name, parameters=parameters(m)["total"], gpus=gpus, shard=level,
                                 reference_sharded=reference_sharded,
                                 memory_gib={k: v / GIB for k, v in mem.items()},
                                 fits=mem["total"] <= args.gpu_gib * GIB * args.usable,
                                 moved_gib=bytes_moved(m, level, gpus, reference_sharded, args.accumulation) / GIB,
                                 time=step_seconds(m, level, gpus, reference_sharded, args)))
    return rows


def markdown(rows, args):
    out = [f"Inputs: {args.gpu_gib} GiB GPUs ({args.usable:.0%} usable), micro-batch {args.micro_batch} x "
           f"{args.seq} tokens, accumulation {args.accumulation}, MFU {args.mfu:.0%} of {args.peak_tflops:g} "
           f"TFLOP/s, bus bandwidth {args.busbw_intra:g} GB/s within a node of {args.gpus_per_node}, "
           f"{args.busbw_inter:g} GB/s across nodes, {args.overlap:.0%} of communication hidden.", ""]
    out.append("| model | GPUs | shard | weights | grads | optimizer | reference | activations | total GiB | fits | "
               "moved GiB/step | step s | tokens/s/GPU |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        g = r["memory_gib"]
        out.append(f"| {r['model']} | {r['gpus']} | {r['shard']} | {g['weights'] + g['gathered_layers']:.1f} | "
                   f"{g['gradients']:.1f} | {g['optimizer']:.1f} | {g['reference']:.1f} | {g['activations']:.1f} | "
                   f"{g['total']:.1f} | {'yes' if r['fits'] else 'no'} | {r['moved_gib']:.1f} | "
                   f"{r['time']['step']:.2f} | {r['time']['tokens_per_second_per_gpu']:,.0f} |")
    return "\n".join(out)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--gpu-gib", type=float, default=80)
    ap.add_argument("--usable", type=float, default=0.9, help="share of GPU memory a job may plan for")
    ap.add_argument("--micro-batch", type=int, default=2, help="sequences per GPU per micro-batch")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--accumulation", type=int, default=4)
    ap.add_argument("--mfu", type=float, default=0.45, help="TRL + Liger's DPO step on an H200 (docs/scaling.md)")
    ap.add_argument("--peak-tflops", type=float, default=790, help="dense bf16 matmul measured on an H200")
    ap.add_argument("--busbw-intra", type=float, default=360, help="GB/s within a node (NVLink); an assumption")
    ap.add_argument("--busbw-inter", type=float, default=45, help="GB/s across nodes (400 Gb/s per GPU); an assumption")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--overlap", type=float, default=0.5, help="share of communication hidden behind compute")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for name in ("usable", "mfu", "overlap"):
        value = getattr(args, name)
        if not 0 <= value <= 1 or (name != "overlap" and value == 0):
            ap.error(f"--{name} must be in (0, 1], got {value}")
    if min(args.gpus) < 1:
        ap.error("--gpus must be positive")
    rows = plan(args)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
