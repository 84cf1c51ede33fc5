"""DPO step on a GPU: Aln against TRL's DPOTrainer (with and without Liger's kernels), side by side in one run.

The shape is the one ../shared/DEVICE.md's anchors were measured at: a Qwen2.5-0.5B-shaped Llama (494 M parameters,
hidden 896, 24 layers, 14 heads / 2 kv heads, intermediate 4,864, vocabulary 151,936, tied embeddings), random
weights, 8 pairs a step of 512 prompt + 512 response tokens, bf16 compute over float32 master weights, AdamW, the
reference a frozen copy run every step (TRL without precomputed reference log-probs; Aln `reference.mode:
on_the_fly`). Each framework runs in its own process, one after another, on the same text.

Data: prompts "\\n\\nHuman:" + words + "\\n\\nAssistant:" and responses of words, each word one GPT-2 token, so every
sequence is exactly prompt + response tokens in both frameworks (checked with the tokenizer before anything runs).

Measured per framework: the median step time after --warmup steps (Aln: train_log.jsonl's "seconds"; TRL: wall time
between optimizer-step ends, after a device synchronisation), tokens per second (2 x pairs x (prompt + response) a
step), and the GPU memory the process used at its peak as `nvidia-smi` reports it (sampled every 100 ms: the CUDA
context and the allocator's cache included, the same for every framework); TRL also reports
torch.cuda.max_memory_allocated; and each process's peak resident host memory. The headline: Aln's throughput and
peak GPU memory over TRL + Liger's. Not the same in the two: TRL keeps its reference in float32, Aln in bf16.

  python3 bench/gpu_dpo_step.py --aln build/bin/aln [--peers trl,trl_liger] [--steps 10] [--warmup 4]
                                [--device cuda] [--out gpu_dpo_step.json]
  (--tiny: a 2-layer, hidden-64 model for a smoke run, on the CPU too: --device cpu --peers none; --model wide:
  hidden 512 and 4 layers, for mixed precision on the CPU)
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "examples/data/tokenizers/gpt2/tokenizer.json")
EOS = "<|endoftext|>"
QWEN_05B = {"vocab_size": 151936, "hidden_size": 896, "num_layers": 24, "num_heads": 14, "num_kv_heads": 2,
            "intermediate_size": 4864, "max_position": 4096, "tie_embeddings": True}
TINY = {"vocab_size": 50257, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
        "intermediate_size": 176, "max_position": 2048, "tie_embeddings": True}
# Small enough for the CPU, wide enough that the layers (not the output projection) are most of the step.
WIDE = {"vocab_size": 50257, "hidden_size": 512, "num_layers": 4, "num_heads": 8, "num_kv_heads": 4,
        "intermediate_size": 1408, "max_position": 2048, "tie_embeddings": True}
MODELS = {"qwen0.5b": QWEN_05B, "wide": WIDE, "tiny": TINY}
# DEVICE.md, measured on an H200 on 2026-12-04 (TRL 1.16 + Liger 0.8.5): the numbers to beat.
ANCHOR = {"trl_liger": {"tokens_per_s": 88900, "peak_allocated_GiB": 27.6},
          "trl": {"tokens_per_s": 69200, "peak_allocated_GiB": 33.9}}
WORDS = ("the cat dog house tree water light stone river cloud green small large quick slow red blue city road "
         "music paper table window garden friend").split()


def make_rows(pairs_total, prompt_len, response_len, seed=0):
    """Text whose GPT-2 tokens are exactly prompt_len (turn markers included) and response_len - 1 (+ end token)."""
    rng = random.Random(seed)
    words = lambda n: "".join(" " + rng.choice(WORDS) for _ in range(n))  # noqa: E731
    return [{"prompt": "\n\nHuman:" + words(prompt_len - 8) + "\n\nAssistant:",  # 4 + 4 marker tokens
             "chosen": words(response_len - 1), "rejected": words(response_len - 1)} for _ in range(pairs_total)]


def check_lengths(rows, prompt_len, response_len):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(TOKENIZER)
    for r in rows[:4]:
        p = tok.encode(r["prompt"], add_special_tokens=False).ids
        c = tok.encode(r["chosen"], add_special_tokens=False).ids
        both = tok.encode(r["prompt"] + r["chosen"], add_special_tokens=False).ids
        assert len(p) == prompt_len and len(c) == response_len - 1 and both == p + c, (len(p), len(c))


class GpuMemory:
    """Peak GPU memory of one process as nvidia-smi reports it, sampled every 100 ms (None without nvidia-smi)."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, None, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        if shutil.which("nvidia-smi"):
            self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                text = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.TimeoutExpired):
                text = ""
            for line in text.splitlines():
                parts = [x.strip() for x in line.split(",")]
                if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                    self.peak = max(self.peak or 0, int(parts[1]))
            self.stop.wait(0.1)

    def done(self):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        return self.peak


def run_watched(cmd, log_path):
    """Exit code, peak GPU memory (MiB, nvidia-smi; None without it) and peak resident host memory (MiB)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        watch = GpuMemory(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, watch.done(), usage.ru_maxrss / 1024


def aln_job(args, sizes, data, out_dir):
    cfg = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in sizes.items())
    return f"""# Written by bench/gpu_dpo_step.py
name: gpu-dpo-step
output_dir: {out_dir}
seed: 42
model:
  tokenizer: {TOKENIZER}
  dtype: {args.dtype}
  config: {{architecture: llama, {cfg}}}
trainer: {{dpo: {{beta: 0.1}}}}
reference: {{mode: on_the_fly}}
data:
  train: [{{path: {data}, format: preference}}]
  eval_fraction: 0
  max_prompt_length: {args.prompt_length}
  max_response_length: {args.response_length}
  bad_records: fail
optimizer: {{lr: 1e-6, schedule: constant, warmup_steps: 0, max_steps: {args.warmup + args.steps},
            micro_batch_size: {args.pairs}, gradient_accumulation: 1, max_grad_norm: 1.0, weight_decay: 0}}
metrics: {{enabled: false, progress_bar: false}}
checkpoint: {{every_steps: 0}}
runtime: {{device: {args.device}}}
"""


def run_aln(args, sizes, data, work):
    out_dir = os.path.join(work, "aln")
    job = os.path.join(work, "aln.yaml")
    with open(job, "w") as f:
        f.write(aln_job(args, sizes, data, out_dir))
    rc, peak, rss = run_watched([args.aln, "train", job], os.path.join(work, "aln.log"))
    if rc != 0:
        with open(os.path.join(work, "aln.log")) as f:
            return {"error": f"aln exited {rc}: " + "".join(f.readlines()[-5:])}
    with open(os.path.join(out_dir, "train_log.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"seconds"' in line]
    seconds = [x["seconds"] for x in lines]
    # Every step must hold the tokens the peers' steps hold (no truncation, no padding).
    tokens = 2 * args.pairs * (args.prompt_length + args.response_length)
    if any(x.get("tokens") != tokens for x in lines):
        return {"error": f"aln's steps held {sorted({x.get('tokens') for x in lines})} tokens, not {tokens}"}
    return {"steps_s": [round(s, 4) for s in seconds], "losses": [x.get("loss") for x in lines],
            "step_s_median": statistics.median(seconds[args.warmup:]), "peak_process_MiB": peak,
            "peak_rss_MiB": rss}


def peer_worker(spec_path):
    """TRL's DPOTrainer (with Liger's kernels when asked) on the same rows, bf16 autocast over float32 weights."""
    with open(spec_path) as f:
        spec = json.load(f)
    os.environ.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch
    import transformers as tr
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    sizes = spec["sizes"]
    tok = tr.PreTrainedTokenizerFast(tokenizer_file=TOKENIZER, eos_token=EOS, pad_token=EOS)
    eos_id = tok.convert_tokens_to_ids(EOS)
    config = tr.LlamaConfig(vocab_size=sizes["vocab_size"], hidden_size=sizes["hidden_size"],
                            intermediate_size=sizes["intermediate_size"], num_hidden_layers=sizes["num_layers"],
                            num_attention_heads=sizes["num_heads"], num_key_value_heads=sizes["num_kv_heads"],
                            max_position_embeddings=sizes["max_position"], tie_word_embeddings=sizes["tie_embeddings"],
                            rms_norm_eps=1e-6, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    torch.manual_seed(0)
    model_dir = os.path.join(spec["work"], "peer_model")
    tr.LlamaForCausalLM(config).save_pretrained(model_dir)
    cuda = spec["device"] == "cuda"
    seconds, last = [], [None]

    class Timer(tr.TrainerCallback):
        def on_step_begin(self, *a, **k):
            if last[0] is None:
                last[0] = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            seconds.append(now - last[0])
            last[0] = now

    args = DPOConfig(output_dir=os.path.join(spec["work"], "peer_out"), per_device_train_batch_size=spec["pairs"],
                     max_steps=spec["max_steps"], learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0,
                     weight_decay=0.0, max_grad_norm=1.0, beta=0.1, loss_type=["sigmoid"],
                     max_length=spec["prompt_length"] + spec["response_length"], truncation_mode="keep_start",
                     bf16=spec["dtype"] == "bfloat16", gradient_checkpointing=False,
                     use_liger_kernel=spec["liger"], use_cpu=not cuda, report_to="none", save_strategy="no",
                     eval_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=42)
    with open(spec["data"]) as f:
        dataset = Dataset.from_list([json.loads(line) for line in f])
    trainer = DPOTrainer(model=model_dir, args=args, train_dataset=dataset, processing_class=tok, callbacks=[Timer()])
    first = trainer.train_dataset[0]
    assert len(first["prompt_ids"]) == spec["prompt_length"] and len(first["chosen_ids"]) == spec["response_length"]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    with open(spec["result"], "w") as f:
        json.dump({"steps_s": [round(s, 4) for s in seconds],
                   "peak_allocated_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                   "versions": {"torch": torch.__version__, "transformers": tr.__version__,
                                "trl": __import__("trl").__version__}}, f)


def run_peer(args, sizes, data, work, liger):
    name = "trl_liger" if liger else "trl"
    spec = {"sizes": sizes, "work": work, "data": data, "pairs": args.pairs, "dtype": args.dtype, "liger": liger,
            "device": args.device, "prompt_length": args.prompt_length, "response_length": args.response_length,
            "max_steps": args.warmup + args.steps, "result": os.path.join(work, f"{name}.json")}
    spec_path = os.path.join(work, f"{name}.spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    rc, peak, rss = run_watched([sys.executable, os.path.abspath(__file__), "--peer-worker", spec_path],
                                os.path.join(work, f"{name}.log"))
    if rc != 0:
        with open(os.path.join(work, f"{name}.log")) as f:
            return {"error": f"{name} exited {rc}: " + "".join(f.readlines()[-5:])}
    with open(spec["result"]) as f:
        got = json.load(f)
    got["step_s_median"] = statistics.median(got["steps_s"][args.warmup:])
    got["peak_process_MiB"] = peak
    got["peak_rss_MiB"] = rss
    return got


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--aln", default=os.path.join(ROOT, "build/bin/aln"))
    p.add_argument("--peers", default="trl,trl_liger", help="comma-separated subset of trl,trl_liger, or none")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--prompt-length", type=int, default=512)
    p.add_argument("--response-length", type=int, default=512, help="response tokens, end-of-text included")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--model", choices=sorted(MODELS), default="qwen0.5b",
                   help="qwen0.5b (DEVICE.md's anchors), wide (hidden 512, 4 layers) or tiny (hidden 64, 2 layers)")
    p.add_argument("--tiny", action="store_true", help="--model tiny (a smoke run)")
    p.add_argument("--out", default="")
    p.add_argument("--peer-worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer_worker:
        peer_worker(args.peer_worker)
        return
    sizes = MODELS["tiny" if args.tiny else args.model]
    rows = make_rows(args.pairs * (args.warmup + args.steps), args.prompt_length, args.response_length)
    check_lengths(rows, args.prompt_length, args.response_length)
    tokens_per_step = 2 * args.pairs * (args.prompt_length + args.response_length)
    work = tempfile.mkdtemp(prefix="aln-gpu-dpo-")
    data = os.path.join(work, "pairs.jsonl")
    with open(data, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    result = {"model": sizes, "pairs": args.pairs, "prompt_length": args.prompt_length,
              "response_length": args.response_length, "dtype": args.dtype, "device": args.device,
              "tokens_per_step": tokens_per_step, "anchor_DEVICE_md": ANCHOR, "frameworks": {}}
    peers = [x for x in args.peers.split(",") if x and x != "none"]
    unknown = [x for x in peers if x not in ("trl", "trl_liger")]
    if unknown:
        sys.exit(f"--peers: unknown {unknown}; use trl, trl_liger or none")
    runs = [("aln", lambda: run_aln(args, sizes, data, work))]
    for peer in peers:
        runs.append((peer, lambda liger=(peer == "trl_liger"): run_peer(args, sizes, data, work, liger)))
    for name, run in runs:
        print(f"[gpu_dpo_step] {name} ...", flush=True)
        got = run()
        if "step_s_median" in got:
            got["tokens_per_s"] = tokens_per_step / got["step_s_median"]
        result["frameworks"][name] = got
        print(f"[gpu_dpo_step] {name}: " + json.dumps({k: got.get(k) for k in
                                                       ("step_s_median", "tokens_per_s", "peak_process_MiB", "peak_rss_MiB", "error")}),
              flush=True)
        add_ratios(result)
        if args.out:  # after each framework, so that a run stopped by a time limit keeps what it measured
            with open(args.out, "w") as f:
                f.write(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


def add_ratios(result):
    """Aln's throughput and peak GPU memory over each peer measured so far."""
    fw = result["frameworks"]
    for peer in ("trl_liger", "trl"):
        if "tokens_per_s" in fw.get("aln", {}) and "tokens_per_s" in fw.get(peer, {}):
            result[f"aln_over_{peer}"] = {
                "throughput": fw["aln"]["tokens_per_s"] / fw[peer]["tokens_per_s"],
                "peak_process_memory": (fw["aln"]["peak_process_MiB"] / fw[peer]["peak_process_MiB"]
                                        if fw["aln"].get("peak_process_MiB") and fw[peer].get("peak_process_MiB")
                                        else None)}


if __name__ == "__main__":
    main()
