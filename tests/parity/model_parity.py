"""Aln's decoders against transformers: tiny random Llama (GQA), Qwen2-style (qkv bias), Llama-3 RoPE
scaling, GPT-2 and a Llama reward model, on left- and right-padded batches in float32.

Usage: model_parity.py TOOL   (TOOL = build/bin/model_parity_tool)
Logits must match to 1e-5 relative (max |diff| / max |ref|); greedy generation must give the same
32 new tokens as transformers' generate().
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers as tr

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


def export(model, out, ids, mask, gen=None):
    model.config.architectures = [type(model).__name__]  # as save_pretrained() records it
    model.config.save_pretrained(out)
    tensors = []
    for i, (name, value) in enumerate(model.state_dict().items()):
        file = f"t{i}.bin"
        value.detach().to(torch.float32).contiguous().numpy().tofile(os.path.join(out, file))
        tensors.append({"name": name, "file": file, "shape": list(value.shape)})
    manifest = {"tensors": tensors, "batch_shape": list(ids.shape)}
    ids.numpy().astype(np.int64).tofile(os.path.join(out, "input_ids.bin"))
    mask.numpy().astype(np.int64).tofile(os.path.join(out, "attention_mask.bin"))
    if gen is not None:
        gids, gmask, n = gen
        gids.numpy().astype(np.int64).tofile(os.path.join(out, "generate_ids.bin"))
        gmask.numpy().astype(np.int64).tofile(os.path.join(out, "generate_mask.bin"))
        manifest.update(generate_shape=list(gids.shape), generate_new_tokens=n)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    subprocess.run([TOOL, out], check=True)


def batch(vocab, pad_id, side):
    lengths = [9, 6, 3]
    t = max(lengths)
    ids = torch.full((len(lengths), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), t), dtype=torch.long)
    for r, n in enumerate(lengths):
        row = torch.randint(1, vocab, (n,))
        sl = slice(t - n, t) if side == "left" else slice(0, n)
        ids[r, sl] = row
        mask[r, sl] = 1
    return ids, mask


def compare_logits(name, model, side, generate=False):
    vocab = model.config.vocab_size
    ids, mask = batch(vocab, 0, side)
    # transformers derives positions from the mask only in generate(); pass them explicitly.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    gen = None
    if generate:
        gids, gmask = batch(vocab, 0, "left")
        gen = (gids, gmask, 32)
    with tempfile.TemporaryDirectory() as out:
        export(model, out, ids, mask, gen)
        ours = torch.from_numpy(np.fromfile(os.path.join(out, "aln_logits.bin"), dtype=np.float32)).view(ref.shape)
        real = mask.bool()
        err = (ours[real] - ref[real]).abs().max().item() / ref[real].abs().max().item()
        check(f"{name} logits, {side} padding", err <= 1e-5, f"relative error {err:.2e}")
        if generate:
            with torch.no_grad():
                want = model.generate(input_ids=gids, attention_mask=gmask, max_new_tokens=32, min_new_tokens=32,
                                      do_sample=False, pad_token_id=0, eos_token_id=None)[:, gids.shape[1]:]
            got = torch.from_numpy(np.fromfile(os.path.join(out, "aln_generated.bin"), dtype=np.int64)).view(want.shape)
            check(f"{name} greedy generation (32 new tokens)", torch.equal(got, want),
                  f"first mismatch rows {(got != want).any(-1).nonzero().flatten().tolist()}")


common = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
models = {
    "llama-gqa": tr.LlamaForCausalLM(tr.LlamaConfig(num_key_value_heads=2, **common)),
    "llama-tied": tr.LlamaForCausalLM(tr.LlamaConfig(num_key_value_heads=4, tie_word_embeddings=True, **common)),
    "qwen2-bias": tr.Qwen2ForCausalLM(tr.Qwen2Config(num_key_value_heads=2, **common)),
    "llama3-rope": tr.LlamaForCausalLM(tr.LlamaConfig(num_key_value_heads=2, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}, **common)),
    "gpt2": tr.GPT2LMHeadModel(tr.GPT2Config(vocab_size=101, n_embd=64, n_layer=3, n_head=4, n_positions=256,
                                             pad_token_id=0, bos_token_id=1, eos_token_id=2)),
}
for name, model in models.items():
    model.eval()
    # Random init of norms is 1 and biases 0: perturb everything so each parameter matters.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    for side in ("left", "right"):
        compare_logits(name, model, side, generate=(side == "left"))

# Reward model: score head at the last non-padding token.
rm = tr.LlamaForSequenceClassification(tr.LlamaConfig(num_key_value_heads=2, num_labels=1, **common)).eval()
with torch.no_grad():
    for p in rm.parameters():
        p.add_(torch.randn_like(p) * 0.05)
for side in ("left", "right"):
    ids, mask = batch(101, 0, side)
    with torch.no_grad():
        ref = rm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    with tempfile.TemporaryDirectory() as out:
        export(rm, out, ids, mask)
        ours = torch.from_numpy(np.fromfile(os.path.join(out, "aln_scores.bin"), dtype=np.float32)).view(ref.shape)
    err = (ours - ref).abs().max().item() / ref.abs().max().item()
    check(f"reward model scores, {side} padding", err <= 1e-5, f"relative error {err:.2e}")

# Checkpoints both ways: transformers' save_pretrained (single file and sharded) loads in Aln with the
# same logits; what Aln saves (float32, bfloat16, sharded) loads in transformers with identical logits.
for name in ("llama-gqa", "qwen2-bias", "gpt2"):
    model = models[name]
    ids, mask = batch(101, 0, "right")
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    for shard in ("1GB", "20KB"):
        with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as dst:
            model.save_pretrained(src, max_shard_size=shard)
            ids.numpy().astype(np.int64).tofile(os.path.join(src, "input_ids.bin"))
            mask.numpy().astype(np.int64).tofile(os.path.join(src, "attention_mask.bin"))
            with open(os.path.join(src, "batch.json"), "w") as f:
                json.dump({"shape": list(ids.shape)}, f)
            sharded_in = os.path.exists(os.path.join(src, "model.safetensors.index.json"))
            for dtype, shard_bytes in (("float32", 0), ("float32", 30000), ("bfloat16", 0)):
                out = os.path.join(dst, f"{dtype}-{shard_bytes}")
                subprocess.run([TOOL, "checkpoint", src, out, str(shard_bytes), dtype], check=True)
                ours = torch.from_numpy(np.fromfile(os.path.join(src, "aln_logits.bin"), dtype=np.float32)).view(ref.shape)
                err = (ours[real] - ref[real]).abs().max().item() / ref[real].abs().max().item()
                if dtype == "float32" and shard_bytes == 0:
                    check(f"{name}: transformers checkpoint ({'sharded' if sharded_in else 'single file'}) loads in Aln",
                          err <= 1e-5, f"relative error {err:.2e}")
                back = type(model).from_pretrained(out, dtype=getattr(torch, dtype)).eval()
                with torch.no_grad():
                    again = back(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
                # Reference: transformers' own checkpoint loaded in the same dtype (loading, not casting
                # a live model, so buffers such as RoPE frequencies are handled identically).
                original = type(model).from_pretrained(src, dtype=getattr(torch, dtype)).eval()
                with torch.no_grad():
                    want = original(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
                exact = torch.equal(again[real], want[real])
                sharded_out = os.path.exists(os.path.join(out, "model.safetensors.index.json"))
                check(f"{name}: Aln checkpoint ({dtype}, {'sharded' if sharded_out else 'single file'}) loads in "
                      f"transformers with identical logits", exact)

print(f"{checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
