"""Generation on a GPU: Aln against transformers `generate`, side by side in one run.

The shape is ../shared/DEVICE.md's generation anchor: a Qwen2.5-0.5B-shaped Llama (hidden 896, 24 layers, 14 heads /
2 kv heads, intermediate 4,864, vocabulary 151,936, tied embeddings), random weights in bf16, a batch of 64 prompts
of 256 tokens, 128 new tokens each, greedy, no end token (every row runs all 128 steps on both sides).
transformers runs its `generate` (SDPA attention, its default dynamic cache) in this process; Aln runs
bench/model_bench on the same saved model and prompts twice: its default decoding steps (on a GPU, one CUDA graph
captured per call and replayed each step) and `--steps dynamic` (the same steps launched one kernel at a time), so
what the graph is worth shows beside the comparison. Each timing is the median of --repeats calls after one
warm-up call, ended by a device synchronisation.

Reported: new tokens/s for each, Aln's ratios over transformers, whether Aln replayed a graph, and the share of Aln's
tokens equal to transformers' (in bf16 the two sides' kernels round differently, so greedy paths can part at a
near-tie; in float32 they agree).

  python3 bench/gpu_generate.py --model-bench build/bin/model_bench [--out gpu_generate.json]
  (--tiny --device cpu --dtype float32: a 2-layer model for a smoke run of the script on the CPU)
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
import transformers as tr

# DEVICE.md, measured on an H200 on 2026-12-04: transformers 4.57 `generate`, this shape, bf16.
ANCHOR_TRANSFORMERS_TOKENS_PER_S = 2367

parser = argparse.ArgumentParser()
parser.add_argument("--model-bench", required=True, help="Aln's bench/model_bench binary")
parser.add_argument("--device", default="cuda")
parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--prompt-len", type=int, default=256)
parser.add_argument("--new-tokens", type=int, default=128)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--tiny", action="store_true")
parser.add_argument("--out", default="")
args = parser.parse_args()

if args.tiny:
    config = tr.LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                            tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
else:
    config = tr.LlamaConfig(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                            rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2)
dtype = getattr(torch, args.dtype)
device = torch.device(args.device)
torch.manual_seed(0)
model = tr.LlamaForCausalLM(config).to(dtype).eval()
prompt = torch.randint(3, config.vocab_size, (args.batch, args.prompt_len))


def synchronize():
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


result = {"config": {"model": "tiny" if args.tiny else "qwen2.5-0.5b-shaped llama", "dtype": args.dtype,
                     "device": args.device, "batch": args.batch, "prompt_len": args.prompt_len,
                     "new_tokens": args.new_tokens, "repeats": args.repeats, "torch": torch.__version__,
                     "transformers": tr.__version__},
          "anchor_transformers_tokens_per_s_h200": ANCHOR_TRANSFORMERS_TOKENS_PER_S}
with tempfile.TemporaryDirectory() as d:
    model.save_pretrained(d)
    on_device = model.to(device)
    ids, mask = prompt.to(device), torch.ones_like(prompt).to(device)
    with torch.no_grad():
        gen = lambda: on_device.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,  # noqa: E731
                                         min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
                                         pad_token_id=0)
        expected = gen()[:, args.prompt_len:].cpu()  # also the warm-up
        hf_times = [timed(gen) for _ in range(args.repeats)]
    on_device.to("cpu")  # (the same module as `model`: its GPU copy is released here)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the GPU's memory to Aln's process
    result["transformers"] = {"tokens_per_s": args.batch * args.new_tokens / statistics.median(hf_times),
                              "seconds": hf_times}
    prompt.numpy().tofile(os.path.join(d, "bench_prompt.bin"))
    expected.contiguous().numpy().tofile(os.path.join(d, "bench_expected.bin"))
    for steps in ("auto", "dynamic"):
        cmd = [args.model_bench, d, "1", str(args.batch), str(args.prompt_len), str(args.new_tokens), "16",
               str(args.repeats), args.device, args.dtype, steps]
        out = subprocess.run(cmd, capture_output=True, text=True)
        name = "aln" if steps == "auto" else "aln_dynamic_steps"
        if out.returncode != 0:
            result[name] = {"error": (out.stderr or out.stdout)[-2000:]}
            continue
        aln = json.loads(out.stdout)
        result[name] = {"tokens_per_s": aln["generate_tokens_per_s"], "replayed_graph": aln["replayed_graph"],
                        "token_match": aln["token_match"], "seconds_median": aln["generate_s"]}
        if out.stderr.strip():
            result[name]["stderr"] = out.stderr[-1000:]
        result[f"{name}_over_transformers"] = aln["generate_tokens_per_s"] / result["transformers"]["tokens_per_s"]

text = json.dumps(result, indent=2)
print(text)
if args.out:
    with open(args.out, "w") as f:
        f.write(text + "\n")
