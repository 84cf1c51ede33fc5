"""DPO training step: Aln vs TRL's DPOTrainer (stock and tuned) and a plain PyTorch loop, same model, data, batch,
lengths, dtype and threads.

Peers, each in its own process, one after another within a setting:
  trl        TRL's DPOTrainer as its documentation sets it up (glibc allocator defaults);
  trl_tuned  the same with what a careful CPU user would change (tune_trl(): the allocator setting Aln applies to
             itself, and TRL's log-probs on the response positions only, as its GPU path does); Liger's fused kernels
             are Triton (GPU) only, so they are not part of the CPU comparison;
  torch      a plain eager PyTorch loop written here (torch_worker), with the tuned allocator setting.
The headline ratios are Aln's over trl_tuned and over torch. Memory is reported as peak resident memory and as growth:
the process's peak minus its own resident memory once its libraries are loaded (Python: after the imports; Aln: the
peak of `aln version`), so interpreter and library footprints do not count and everything the job does (model, data,
reference log-probs, training) does.

One run measures two settings, each in every framework:

  cached_reference      Aln `reference: {mode: cached}`      TRL `precompute_ref_log_probs=True`
  on_the_fly_reference  Aln `reference: {mode: on_the_fly}`  TRL keeps a reference model, one extra forward a step

Data: real HH-RLHF pairs (examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz) cut, at token boundaries, to a
fixed shape: every prompt is exactly --prompt-length tokens (a "\\n\\nHuman:" turn marker followed by the end of the
dialogue, so it still ends in "\\n\\nAssistant:") and every chosen/rejected response exactly --response-length tokens
including the end-of-text token both frameworks append. Pairs are kept only if the text re-tokenizes to exactly those
tokens and prompt + response tokenizes to prompt tokens + response tokens, so neither framework truncates or re-splits
anything: both see the same token sequences, with no padding, and every step holds 2 x batch x (P + R) tokens
whatever order each framework draws the pairs in. The same prompt/chosen/rejected strings go to both, as TRL-style
JSONL (Aln: `format: preference`; prompts start with "\\n\\nHuman:" so Aln's hh chat format uses them as they are).
With --fill-prompts, a dialogue whose prompt is shorter than --prompt-length is preceded by the dialogues read before
it (their chosen versions), so lengths up to 1,024 tokens are real text too; the cut and the checks are the same.

Model: a Llama with the sizes of examples/quickstart.yaml by default (vocab 50257, hidden 64, 2 layers, 4 heads, 2 kv
heads, intermediate 176, tied embeddings), float32, random weights (Aln from `model.config`, TRL from a
transformers LlamaConfig of the same sizes). Per step, tokens = non-padding tokens of the chosen and rejected
sequences (prompt + response) of the step's batch. Throughput = median over the steps after --warmup of
tokens / step seconds (Aln: "seconds" of <output_dir>/train_log.jsonl; TRL: wall time between consecutive optimizer
step ends, seen by a TrainerCallback). Peak memory = peak resident set of the framework's whole process (wait4).
Utilisation (mfu) = the step's model FLOPs (step_flops: the products it needs, counted once) per median step second
over float32 torch.mm's peak on the same threads, measured at the start of the run (matmul_peak_flops).

  .venv/bin/python bench/dpo_step.py [--aln build/bin/aln] [--steps 20] [--warmup 3] [--batch-size 8]
                                     [--hidden 64] [--layers 2] [--threads 2] [--out dpo_step.json]
"""
import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "examples/data/tokenizers/gpt2/tokenizer.json")
HH_DATA = os.path.join(ROOT, "examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz")
HUMAN, ASSISTANT, EOS = "\n\nHuman:", "\n\nAssistant:", "<|endoftext|>"
# Issue #26's goals, against the tuned peer (b) and the plain PyTorch baseline (c).
GOAL = {"over_trl_tuned_throughput_at_least": 1.5, "over_torch_throughput_at_least": 1.3,
        "over_trl_tuned_memory_growth_at_most": 0.7}
# Issue #26's utilisation goal for Aln's step: its model FLOPs per second over the measured matmul peak.
MFU_GOAL = {64: 0.60, 512: 0.85}
# The allocator setting Aln applies to itself (mallopt in main()), given to the tuned peers through glibc's
# environment: without it they page-fault every logits-sized temporary each step.
TUNED_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
FRAMEWORKS = ("aln", "trl", "trl_tuned", "torch")
STARTUP_RSS = None  # a Python worker's resident memory once its libraries are imported
SETTINGS = {"cached_reference": ("cached", True), "on_the_fly_reference": ("on_the_fly", False)}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--aln", default="", help="aln binary (default: build/bin/aln, else build/trainers/cli/aln)")
    p.add_argument("--steps", type=int, default=20, help="measured optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="optimizer steps run first and left out of the median")
    p.add_argument("--batch-size", type=int, default=8, help="preference pairs per optimizer step")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (intermediate = 11/4 of it, 4 heads, 2 kv)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--prompt-length", type=int, default=96, help="tokens per prompt (P)")
    p.add_argument("--response-length", type=int, default=32, help="tokens per response, end-of-text included (R)")
    p.add_argument("--fill-prompts", action="store_true",
                   help="a dialogue shorter than --prompt-length is preceded by the dialogues read before it (for "
                        "lengths the test split's single dialogues rarely reach; see the module docstring)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ",".join(SETTINGS))
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of " + ",".join(FRAMEWORKS))
    p.add_argument("--keep", action="store_true", help="keep the work directory (jobs, logs, data) and print it")
    p.add_argument("--out", default="")
    # Internal: the TRL side runs as a second mode of this script, in its own process.
    p.add_argument("--trl-worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--torch-worker", default="", help=argparse.SUPPRESS)
    return p.parse_args()


def model_sizes(args):
    if args.hidden % 4:
        raise SystemExit("--hidden must be a multiple of 4 (4 attention heads)")
    return {"vocab_size": 50257, "hidden_size": args.hidden, "num_layers": args.layers, "num_heads": 4,
            "num_kv_heads": 2, "intermediate_size": args.hidden * 11 // 4, "max_position": 512,
            "tie_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}


# ------------------------------------------------------------------------------------------------------------------
# Data


def split_dialogue(chosen, rejected):
    """Prompt = longest common prefix ending in "\\n\\nAssistant:"; responses = the rest (as Aln's hh_rlhf reader)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    end = chosen[:n].rfind(ASSISTANT)
    if end < 0:
        return None
    end += len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def build_pairs(prompt_len, response_len, needed, fill=False):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(TOKENIZER)
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    eos_id = tok.token_to_id(EOS)
    head = enc(HUMAN)
    pairs, seen, history = [], 0, ""
    with gzip.open(HH_DATA, "rt", encoding="utf-8") as f:
        for line in f:
            seen += 1
            record = json.loads(line)
            parts = split_dialogue(**{k: v for k, v in record.items() if k in ("chosen", "rejected")})
            earlier, history = history, (history + record.get("chosen", ""))[-64 * prompt_len:]
            if parts is None:
                continue
            prompt_ids = enc(parts[0])
            if fill and len(prompt_ids) < prompt_len - len(head):
                # Long prompts from real text: the dialogues read before this one, then this one's own prompt.
                prompt_ids = enc(earlier + parts[0])
            if len(prompt_ids) < prompt_len - len(head):
                continue
            prompt = HUMAN + tok.decode(prompt_ids[len(prompt_ids) - (prompt_len - len(head)):],
                                        skip_special_tokens=False)
            p_ids = enc(prompt)
            if len(p_ids) != prompt_len or not prompt.endswith(ASSISTANT) or "\ufffd" in prompt:
                continue
            responses = []
            for text in parts[1:]:
                ids = enc(text)
                # The first R - 1 tokens; if the text there ends inside a word, the first R - 2 tokens and a ".":
                # this tokenizer's "<|endoftext|>" is single_word/lstrip, so right after a letter the text
                # "<|endoftext|>" both frameworks append would stay literal text, and after a space it swallows it.
                for cut in (tok.decode(ids[:response_len - 1], skip_special_tokens=False),
                            tok.decode(ids[:response_len - 2], skip_special_tokens=False) + "."):
                    cut_ids = enc(cut)
                    if (len(ids) >= response_len - 1 and len(cut_ids) == response_len - 1 and cut.strip()
                            and EOS not in cut and cut_ids[:response_len - 2] == ids[:response_len - 2]
                            and enc(prompt + cut + EOS) == p_ids + cut_ids + [eos_id]):
                        # Both frameworks tokenize prompt + response + end of text as exactly these pieces.
                        responses.append(cut)
                        break
            if len(responses) != 2 or responses[0] == responses[1]:
                continue
            pairs.append({"prompt": prompt, "chosen": responses[0], "rejected": responses[1]})
            if len(pairs) == needed:
                break
    if not pairs:
        raise SystemExit("no HH-RLHF pair is long enough for these --prompt-length/--response-length")
    return pairs, seen


# ------------------------------------------------------------------------------------------------------------------
# Processes


def run_measured(cmd, log_path, env):
    """Runs cmd to completion with output to log_path; returns (exit code, peak RSS bytes of that process, seconds)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        # wait4 reports this child's own resource usage (ru_maxrss in KiB on Linux), so each framework's peak is
        # measured separately, unlike getrusage(RUSAGE_CHILDREN), which keeps the maximum over all children.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, time.perf_counter() - start


def tail(path, n=25):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def summarise(step_tokens, step_seconds, warmup):
    tokens, seconds = step_tokens[warmup:], step_seconds[warmup:]
    tps = [t / s for t, s in zip(tokens, seconds)]
    return {"tokens_per_second": statistics.median(tps) if tps else None,
            "steps": len(tps), "warmup_steps": min(warmup, len(step_tokens)),
            "tokens_per_step": sorted(set(tokens)) if len(set(tokens)) > 1 else (tokens[0] if tokens else None),
            "median_step_seconds": statistics.median(seconds) if seconds else None,
            "mean_tokens_per_second": sum(tokens) / sum(seconds) if seconds else None}


def aln_job(args, sizes, data_path, out_dir, mode):
    cfg = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in sizes.items()
                    if k not in ("rms_norm_eps",))  # Aln's Llama uses rms_norm_eps 1e-6 already
    return f"""# Written by bench/dpo_step.py
name: dpo-step-bench
output_dir: {out_dir}
seed: 42
model:
  tokenizer: {TOKENIZER}
  chat_format: hh
  dtype: float32
  config: {{architecture: llama, {cfg}}}
trainer:
  dpo: {{beta: 0.1}}
reference: {{mode: {mode}}}
data:
  train:
    - {{path: {data_path}, format: preference}}
  eval_fraction: 0
  max_prompt_length: {args.prompt_length}
  max_response_length: {args.response_length}
  bad_records: fail
optimizer: {{lr: {args.lr}, schedule: constant, warmup_steps: 0, max_steps: {args.warmup + args.steps},
            micro_batch_size: {args.batch_size}, gradient_accumulation: 1, max_grad_norm: 1.0, weight_decay: 0}}
metrics: {{enabled: false, port: 0, progress_bar: false}}
checkpoint: {{every_steps: 0}}
runtime: {{device: cpu, threads: {args.threads}}}
"""


def run_aln(args, binary, sizes, data_path, work, setting, mode, env):
    out_dir = os.path.join(work, f"aln_{setting}")
    job = os.path.join(work, f"aln_{setting}.yaml")
    with open(job, "w") as f:
        f.write(aln_job(args, sizes, data_path, out_dir, mode))
    log = os.path.join(work, f"aln_{setting}.log")
    rc, rss, wall = run_measured([binary, "train", job], log, env)
    if rc != 0:
        return {"error": f"aln train exited with {rc}", "log_tail": tail(log)}
    train_log = os.path.join(out_dir, "train_log.jsonl")
    if not os.path.exists(train_log):
        return {"error": f"{train_log} missing (this aln build does not write the per-step log yet)",
                "peak_rss_bytes": rss, "process_seconds": wall}
    with open(train_log) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows.sort(key=lambda r: r["step"])
    result = summarise([int(r["tokens"]) for r in rows], [float(r["seconds"]) for r in rows], args.warmup)
    result.update({"peak_rss_bytes": rss, "process_seconds": wall, "optimizer_steps_logged": len(rows),
                   "first_step_loss": float(rows[0]["loss"]) if rows else None, "reference": {"mode": mode}})
    # Aln's startup footprint: the peak of `aln version`, the same binary with its libraries loaded and nothing done.
    startup_rc, startup, _ = run_measured([binary, "version"], log + ".startup", env)
    if startup_rc == 0:
        result["startup_rss_bytes"] = startup
        result["memory_growth_bytes"] = rss - startup
    if any("skipped" in r for r in rows):
        result["nonfinite_steps_skipped"] = sum(1 for r in rows if r.get("skipped"))
    with open(log, errors="replace") as f:
        read = re.search(r"\((\d+) rows read, (\d+) skipped, (\d+) truncated\)", f.read())
    if read:  # Aln's own count of pairs it had to truncate or skip: 0 and 0 when it sees the intended sequences
        result["data"] = dict(zip(("rows_read", "skipped", "truncated"), map(int, read.groups())))
    return result


def run_worker(args, sizes, data_path, work, setting, precompute, env, kind):
    """A Python peer in its own process: kind "trl" (stock), "trl_tuned" (the careful user's settings) or "torch"
    (the plain PyTorch baseline)."""
    name = f"{kind}_{setting}"
    spec = os.path.join(work, f"{name}.json")
    result_path = os.path.join(work, f"{name}.result.json")
    with open(spec, "w") as f:
        json.dump({"data": data_path, "work": os.path.join(work, name), "sizes": sizes,
                   "precompute": precompute, "batch_size": args.batch_size, "max_steps": args.warmup + args.steps,
                   "prompt_length": args.prompt_length, "response_length": args.response_length,
                   "threads": args.threads, "lr": args.lr, "result": result_path, "tuned": kind == "trl_tuned"}, f)
    log = os.path.join(work, f"{name}.log")
    mode = "--torch-worker" if kind == "torch" else "--trl-worker"
    if kind != "trl":
        env = dict(env, **TUNED_ALLOCATOR)
    rc, rss, wall = run_measured([sys.executable, os.path.abspath(__file__), mode, spec], log, env)
    if rc != 0 or not os.path.exists(result_path):
        return {"error": f"{kind} worker exited with {rc}", "log_tail": tail(log)}
    with open(result_path) as f:
        worker = json.load(f)
    result = summarise(worker["tokens"], worker["seconds"], args.warmup)
    result.update({"peak_rss_bytes": rss, "process_seconds": wall, "optimizer_steps_logged": len(worker["tokens"]),
                   "first_step_loss": worker["losses"][0] if worker["losses"] else None,
                   "reference": worker["reference"]})
    if worker.get("startup_rss_bytes"):
        result["startup_rss_bytes"] = worker["startup_rss_bytes"]
        result["memory_growth_bytes"] = rss - worker["startup_rss_bytes"]
    if worker.get("tuned"):
        result["tuned"] = worker["tuned"]
    return result


# ------------------------------------------------------------------------------------------------------------------
# TRL worker (runs in its own process)


def tune_trl(trainer):
    """What a careful CPU user changes in TRL beyond its documented setup (the allocator setting arrives through the
    environment). TRL's fused LM head (trl/trainer/utils.py) sends only the labelled (response) positions through its
    chunked log-prob kernel when `_use_triton(device)` holds, which its device check limits to GPUs; on CPU every
    position goes through the full-vocabulary log-softmax and the prompt positions' results are then zeroed. One line
    gives the CPU the same response-only path: the log-probs of the response positions are the same, and the prompt
    positions were zero either way. (Patching trl.kernels.chunked_logprob._use_triton instead would pick Triton
    kernels for CPU tensors.) Liger's kernels are Triton, so there is no CPU version to turn on."""
    import trl.trainer.utils as trl_utils

    device_check = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or device_check(device)
    return {"allocator": TUNED_ALLOCATOR, "response_only_logprobs": True,
            "liger": "not used: Triton kernels, no CPU backend"}


def trl_worker(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    os.environ["TQDM_DISABLE"] = "1"
    import torch

    torch.set_num_threads(spec["threads"])
    import transformers as tr
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    global STARTUP_RSS
    STARTUP_RSS = resident_bytes()  # the process with its libraries loaded: memory growth is counted from here

    sizes = spec["sizes"]
    tokenizer = tr.PreTrainedTokenizerFast(tokenizer_file=TOKENIZER, eos_token=EOS, pad_token=EOS)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    torch.manual_seed(0)
    config = tr.LlamaConfig(vocab_size=sizes["vocab_size"], hidden_size=sizes["hidden_size"],
                            intermediate_size=sizes["intermediate_size"], num_hidden_layers=sizes["num_layers"],
                            num_attention_heads=sizes["num_heads"], num_key_value_heads=sizes["num_kv_heads"],
                            max_position_embeddings=sizes["max_position"], rms_norm_eps=sizes["rms_norm_eps"],
                            tie_word_embeddings=sizes["tie_embeddings"], bos_token_id=eos_id, eos_token_id=eos_id,
                            pad_token_id=eos_id)
    # Passed as a directory, as usual: TRL then loads the policy (and, without precomputed log-probs, its own
    # reference copy) from it in float32.
    model_dir = os.path.join(spec["work"], "model")
    tr.LlamaForCausalLM(config).save_pretrained(model_dir)
    with open(spec["data"]) as f:
        dataset = Dataset.from_list([json.loads(line) for line in f])

    class StepTimer(tr.TrainerCallback):
        def __init__(self):
            self.tokens, self.seconds, self.losses, self.pending, self.last = [], [], [], 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.last is None:
                self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            # Wall time from the previous optimizer step's end (the first: from its own begin) to this one's end,
            # so batch fetching and collation count, as they do inside an Aln step.
            now = time.perf_counter()
            self.seconds.append(now - self.last)
            self.tokens.append(self.pending)
            self.pending, self.last = 0, now

    timer = StepTimer()

    class CountingDPOTrainer(DPOTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            timer.pending += int(inputs["attention_mask"].sum())
            loss = super().training_step(model, inputs, *rest, **kwargs)
            timer.losses.append(float(loss))
            return loss

    config = DPOConfig(
        output_dir=spec["work"], per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        max_steps=spec["max_steps"], learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, beta=0.1, loss_type=["sigmoid"],
        max_length=spec["prompt_length"] + spec["response_length"], truncation_mode="keep_start",
        precompute_ref_log_probs=spec["precompute"], bf16=False, fp16=False, gradient_checkpointing=False,
        activation_checkpointing=False,
        use_cpu=True, report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, seed=42)
    trainer = CountingDPOTrainer(model=model_dir, args=config, train_dataset=dataset, processing_class=tokenizer,
                                 callbacks=[timer])
    # Check TRL does what the benchmark claims: the token sequences are the intended ones, and the reference is
    # precomputed (no reference model kept, log-probs in the dataset) or a separate model run every step.
    assert not trainer.args.activation_checkpointing and not trainer.args.bf16 and trainer.args.device.type == "cpu"
    assert next(trainer.model.parameters()).dtype == torch.float32
    first = trainer.train_dataset[0]
    assert len(first["prompt_ids"]) == spec["prompt_length"], len(first["prompt_ids"])
    assert len(first["chosen_ids"]) == spec["response_length"] and first["chosen_ids"][-1] == eos_id
    assert len(first["rejected_ids"]) == spec["response_length"] and first["rejected_ids"][-1] == eos_id
    has_cached = "ref_chosen_logps" in trainer.train_dataset.column_names
    if spec["precompute"]:
        assert trainer.ref_model is None and has_cached, "TRL did not precompute the reference log-probs"
        reference = {"precompute_ref_log_probs": True, "ref_model_in_memory": False}
    else:
        assert trainer.ref_model is not None and not has_cached, "TRL has no separate reference model"
        reference = {"precompute_ref_log_probs": False, "ref_model_in_memory": True}
    tuned = {}
    if spec.get("tuned"):
        tuned = tune_trl(trainer)
    trainer.train()

    with open(spec["result"], "w") as f:
        json.dump({"tokens": timer.tokens, "seconds": timer.seconds, "losses": timer.losses, "reference": reference,
                   "tuned": tuned,
                   "startup_rss_bytes": STARTUP_RSS,
                   "versions": {"trl": __import__("trl").__version__, "transformers": tr.__version__,
                                "torch": torch.__version__}}, f)


# ------------------------------------------------------------------------------------------------------------------
# Plain PyTorch baseline (runs in its own process): what a careful user writes by hand in ~40 lines — the
# transformers Llama backbone, the output projection on the response positions only, gather - logsumexp, DPO's
# sigmoid loss, clipping and AdamW — with the tuned peers' allocator settings.


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def torch_worker(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    import torch
    import torch.nn.functional as F
    import transformers as tr
    from tokenizers import Tokenizer

    startup = resident_bytes()  # the process with its libraries loaded: the baseline memory growth is counted from
    torch.set_num_threads(spec["threads"])
    sizes, plen, rlen, batch = spec["sizes"], spec["prompt_length"], spec["response_length"], spec["batch_size"]
    tok = Tokenizer.from_file(TOKENIZER)
    eos_id = tok.token_to_id(EOS)
    enc = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    with open(spec["data"]) as f:
        pairs = [json.loads(line) for line in f]
    rows = []
    for p in pairs:
        prompt = enc(p["prompt"])
        chosen, rejected = enc(p["chosen"]) + [eos_id], enc(p["rejected"]) + [eos_id]
        assert len(prompt) == plen and len(chosen) == rlen and len(rejected) == rlen
        rows.append((prompt + chosen, prompt + rejected))
    torch.manual_seed(0)
    config = tr.LlamaConfig(vocab_size=sizes["vocab_size"], hidden_size=sizes["hidden_size"],
                            intermediate_size=sizes["intermediate_size"], num_hidden_layers=sizes["num_layers"],
                            num_attention_heads=sizes["num_heads"], num_key_value_heads=sizes["num_kv_heads"],
                            max_position_embeddings=sizes["max_position"], rms_norm_eps=sizes["rms_norm_eps"],
                            tie_word_embeddings=sizes["tie_embeddings"])
    policy = tr.LlamaForCausalLM(config).float().train()
    reference = None if spec["precompute"] else tr.LlamaForCausalLM(config).float().eval()
    if reference is not None:
        reference.load_state_dict(policy.state_dict())
        reference.requires_grad_(False)

    def sequence_logps(model, ids):
        hidden = model.model(input_ids=ids).last_hidden_state[:, plen - 1:-1]  # positions predicting the response
        logits = hidden @ model.lm_head.weight.t()
        targets = ids[:, plen:]
        return (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)).sum(-1)

    batches = [rows[i:i + batch] for i in range(0, len(rows) - batch + 1, batch)]
    as_ids = lambda b: torch.tensor([c for c, _ in b] + [r for _, r in b])  # noqa: E731  [chosen..., rejected...]
    cached = None
    if reference is None:  # the policy at the start is the reference: its log-probs once, before training
        with torch.no_grad():
            cached = [sequence_logps(policy.eval(), as_ids(b)) for b in batches]
        policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=spec["lr"], weight_decay=0.0)
    tokens, seconds, losses = [], [], []
    last = time.perf_counter()
    for step in range(spec["max_steps"]):
        index = step % len(batches)
        ids = as_ids(batches[index])
        if cached is not None:
            ref = cached[index]
        else:
            with torch.no_grad():
                ref = sequence_logps(reference, ids)
        logps = sequence_logps(policy, ids)
        ratios = logps - ref
        chosen, rejected = ratios.chunk(2)
        loss = -F.logsigmoid(0.1 * (chosen - rejected)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        now = time.perf_counter()
        seconds.append(now - last)
        tokens.append(int(ids.numel()))
        last = now
    with open(spec["result"], "w") as f:
        json.dump({"tokens": tokens, "seconds": seconds, "losses": losses, "startup_rss_bytes": startup,
                   "reference": {"cached": reference is None},
                   "versions": {"transformers": tr.__version__, "torch": torch.__version__}}, f)


# ------------------------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------------------------
# Utilisation


def step_flops(sizes, batch, prompt_len, response_len, on_the_fly):
    """Model FLOPs of one DPO step: the products the step needs, counted once (no recompute), 2 per multiply-add.

    Forward per sequence of T = P + R tokens: each layer's projections (q, o: H x H; k, v: H x kv; gate, up, down:
    H x I) over every token, attention's two products over the causal half of T x T, and the output projection
    (V x H) over the R scored positions only (all three frameworks score responses only). Training is forward +
    backward, 3x the forward products of the policy; an on-the-fly reference adds one forward of its own.
    """
    h, inter, layers, vocab = sizes["hidden_size"], sizes["intermediate_size"], sizes["num_layers"], sizes["vocab_size"]
    kv = h // sizes["num_heads"] * sizes["num_kv_heads"]
    t = prompt_len + response_len
    per_layer = 2 * t * (2 * h * h + 2 * h * kv + 3 * h * inter) + 2 * 2 * (t * (t + 1) // 2) * h
    forward = 2 * batch * (layers * per_layer + 2 * response_len * vocab * h)  # chosen and rejected
    return forward * (4 if on_the_fly else 3)


MATMUL_PEAK = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
best = float("inf")
for i in range(10):
    start = time.perf_counter()
    torch.mm(a, b)
    if i >= 3:
        best = min(best, time.perf_counter() - start)
print(2 * 2048 ** 3 / best)
"""


def matmul_peak_flops(threads, env):
    """float32 torch.mm FLOP/s on `threads` threads: the best of 7 products of 2,048 x 2,048 matrices (after 3).

    Measured in a process of its own: with torch loaded here, every framework's process would start as a fork of a
    large parent and its peak resident memory (wait4) would count the parent's."""
    out = subprocess.run([sys.executable, "-c", MATMUL_PEAK, str(threads)], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def main():
    args = parse_args()
    if args.trl_worker:
        return trl_worker(args.trl_worker)
    if args.torch_worker:
        return torch_worker(args.torch_worker)
    settings = [s for s in args.settings.split(",") if s]
    frameworks = [f for f in args.frameworks.split(",") if f]
    if any(s not in SETTINGS for s in settings) or any(f not in FRAMEWORKS for f in frameworks):
        raise SystemExit(f"--settings: subset of {','.join(SETTINGS)}; --frameworks: subset of {','.join(FRAMEWORKS)}")
    binary = args.aln or next((p for p in ("build/bin/aln", "build/trainers/cli/aln")
                               if os.path.exists(os.path.join(ROOT, p))), "build/bin/aln")
    binary = os.path.join(ROOT, binary)
    if "aln" in frameworks and not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary}: no aln binary (build it first, or pass --aln PATH)")

    sizes = model_sizes(args)
    # One epoch holds exactly the pairs the run uses, so both frameworks see every pair once when there are enough.
    needed = (args.warmup + args.steps) * args.batch_size
    pairs, scanned = build_pairs(args.prompt_length, args.response_length, needed, args.fill_prompts)
    if len(pairs) < needed:
        pairs = pairs[:len(pairs) - len(pairs) % args.batch_size] or pairs  # whole batches per epoch
    work = tempfile.mkdtemp(prefix="aln-dpo-bench-")
    data_path = os.path.join(work, "pairs.jsonl")
    with open(data_path, "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="",
               HF_DATASETS_CACHE=os.path.join(work, "hf_datasets"), HF_HUB_OFFLINE="1")

    expected_tokens = 2 * args.batch_size * (args.prompt_length + args.response_length)
    result = {
        "config": {"model": "llama", **{k: sizes[k] for k in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                                                               "num_kv_heads", "intermediate_size", "tie_embeddings")},
                   "dtype": "float32", "threads": args.threads, "batch_size": args.batch_size,
                   "prompt_length": args.prompt_length, "response_length": args.response_length,
                   "expected_tokens_per_step": expected_tokens, "warmup_steps": args.warmup,
                   "measured_steps": args.steps, "pairs": len(pairs), "hh_records_scanned": scanned,
                   "prompts_filled_with_earlier_dialogues": args.fill_prompts,
                   "loss": "dpo sigmoid, beta 0.1 (first step: ln 2 = 0.6931, the policy is the reference)",
                   "optimizer": f"AdamW lr {args.lr} constant, clip 1.0",
                   "aln_binary": os.path.relpath(binary, ROOT) if binary.startswith(ROOT + os.sep) else binary},
        "goal": {**GOAL, "met_means": "in every setting: aln tokens_per_second >= 1.5x trl_tuned and >= 1.3x torch, "
                                      "aln memory growth (peak minus the process's own resident memory as training "
                                      "starts) <= 0.7x trl_tuned's"},
        "peers": {"trl": "TRL DPOTrainer as documented, glibc allocator defaults",
                  "trl_tuned": "TRL DPOTrainer with the allocator setting Aln uses and the tuning in tune_trl()",
                  "torch": "a plain eager PyTorch loop (torch_worker) with the same allocator setting"},
        "settings": {},
        "matmul_peak_flops": matmul_peak_flops(args.threads, env),
        # Other work on the machine skews timings: the 1/5/15-minute load averages before and after the runs.
        "host": {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()},
    }
    for setting in settings:
        mode, precompute = SETTINGS[setting]
        entry = {}
        for fw in frameworks:
            print(f"[dpo_step] {setting}: {fw} ...", file=sys.stderr, flush=True)
            if fw == "aln":
                entry["aln"] = run_aln(args, binary, sizes, data_path, work, setting, mode, env)
            else:
                entry[fw] = run_worker(args, sizes, data_path, work, setting, precompute, env, fw)
        flops = step_flops(sizes, args.batch_size, args.prompt_length, args.response_length, mode == "on_the_fly")
        entry["model_flops_per_step"] = flops
        for side in list(entry.values()):
            if not isinstance(side, dict):
                continue
            if side.get("tokens_per_step") is not None:
                side["tokens_per_step_as_expected"] = side["tokens_per_step"] == expected_tokens
            if side.get("tokens_per_second"):
                # Model FLOPs per second (step FLOPs over the median step) against the peak measured above.
                side["mfu"] = flops * side["tokens_per_second"] / expected_tokens / result["matmul_peak_flops"]
        aln = entry.get("aln") or {}
        ratios = {}
        for peer in ("trl", "trl_tuned", "torch"):
            other = entry.get(peer) or {}
            if aln.get("tokens_per_second") and other.get("tokens_per_second"):
                ratios[peer] = {"tokens_per_second": aln["tokens_per_second"] / other["tokens_per_second"],
                                "peak_rss_bytes": aln["peak_rss_bytes"] / other["peak_rss_bytes"]}
                if aln.get("memory_growth_bytes") and other.get("memory_growth_bytes"):
                    ratios[peer]["memory_growth"] = aln["memory_growth_bytes"] / other["memory_growth_bytes"]
        entry["ratios_aln_over"] = ratios
        if "trl_tuned" in ratios and "torch" in ratios and "memory_growth" in ratios["trl_tuned"]:
            entry["met"] = (ratios["trl_tuned"]["tokens_per_second"] >= GOAL["over_trl_tuned_throughput_at_least"]
                            and ratios["torch"]["tokens_per_second"] >= GOAL["over_torch_throughput_at_least"]
                            and ratios["trl_tuned"]["memory_growth"] <= GOAL["over_trl_tuned_memory_growth_at_most"])
        else:
            entry["met"] = None  # not measured
        if aln.get("mfu") is not None and args.hidden in MFU_GOAL:
            entry["mfu_goal"] = {"at_least": MFU_GOAL[args.hidden], "met": aln["mfu"] >= MFU_GOAL[args.hidden]}
        result["settings"][setting] = entry
    result["host"]["load_average_after"] = os.getloadavg()
    verdicts = [e["met"] for e in result["settings"].values()]
    result["met"] = all(verdicts) if verdicts and None not in verdicts else (False if False in verdicts else None)
    if args.keep:
        result["work_dir"] = work
    else:
        shutil.rmtree(work, ignore_errors=True)

    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    errors = [f"{s}/{fw}: {e[fw]['error']}" for s, e in result["settings"].items() for fw in FRAMEWORKS
              if fw in e and "error" in e[fw]]
    if errors:
        raise SystemExit("; ".join(errors))


if __name__ == "__main__":
    main()
