"""DPO training step: Aln vs TRL's DPOTrainer, same model, data, batch, lengths, dtype and threads.

One run measures two settings, each in both frameworks, every framework in its own process:

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

Model: a Llama with the sizes of examples/quickstart.yaml by default (vocab 50257, hidden 64, 2 layers, 4 heads, 2 kv
heads, intermediate 176, tied embeddings), float32, random weights (Aln from `model.config`, TRL from a
transformers LlamaConfig of the same sizes). Per step, tokens = non-padding tokens of the chosen and rejected
sequences (prompt + response) of the step's batch. Throughput = median over the steps after --warmup of
tokens / step seconds (Aln: "seconds" of <output_dir>/train_log.jsonl; TRL: wall time between consecutive optimizer
step ends, seen by a TrainerCallback). Peak memory = peak resident set of the framework's whole process (wait4).

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
GOAL = {"throughput_ratio_at_least": 1.5, "memory_ratio_at_most": 0.7}
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
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ",".join(SETTINGS))
    p.add_argument("--frameworks", default="aln,trl", help="comma-separated subset of aln,trl")
    p.add_argument("--keep", action="store_true", help="keep the work directory (jobs, logs, data) and print it")
    p.add_argument("--out", default="")
    # Internal: the TRL side runs as a second mode of this script, in its own process.
    p.add_argument("--trl-worker", default="", help=argparse.SUPPRESS)
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


def build_pairs(prompt_len, response_len, needed):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(TOKENIZER)
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    eos_id = tok.token_to_id(EOS)
    head = enc(HUMAN)
    pairs, seen = [], 0
    with gzip.open(HH_DATA, "rt", encoding="utf-8") as f:
        for line in f:
            seen += 1
            parts = split_dialogue(**{k: v for k, v in json.loads(line).items() if k in ("chosen", "rejected")})
            if parts is None:
                continue
            prompt_ids = enc(parts[0])
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
    if any("skipped" in r for r in rows):
        result["nonfinite_steps_skipped"] = sum(1 for r in rows if r.get("skipped"))
    with open(log, errors="replace") as f:
        read = re.search(r"\((\d+) rows read, (\d+) skipped, (\d+) truncated\)", f.read())
    if read:  # Aln's own count of pairs it had to truncate or skip: 0 and 0 when it sees the intended sequences
        result["data"] = dict(zip(("rows_read", "skipped", "truncated"), map(int, read.groups())))
    return result


def run_trl(args, sizes, data_path, work, setting, precompute, env):
    spec = os.path.join(work, f"trl_{setting}.json")
    result_path = os.path.join(work, f"trl_{setting}.result.json")
    with open(spec, "w") as f:
        json.dump({"data": data_path, "work": os.path.join(work, f"trl_{setting}"), "sizes": sizes,
                   "precompute": precompute, "batch_size": args.batch_size, "max_steps": args.warmup + args.steps,
                   "prompt_length": args.prompt_length, "response_length": args.response_length,
                   "threads": args.threads, "lr": args.lr, "result": result_path}, f)
    log = os.path.join(work, f"trl_{setting}.log")
    rc, rss, wall = run_measured([sys.executable, os.path.abspath(__file__), "--trl-worker", spec], log, env)
    if rc != 0 or not os.path.exists(result_path):
        return {"error": f"TRL worker exited with {rc}", "log_tail": tail(log)}
    with open(result_path) as f:
        worker = json.load(f)
    result = summarise(worker["tokens"], worker["seconds"], args.warmup)
    result.update({"peak_rss_bytes": rss, "process_seconds": wall, "optimizer_steps_logged": len(worker["tokens"]),
                   "first_step_loss": worker["losses"][0] if worker["losses"] else None,
                   "reference": worker["reference"]})
    return result


# ------------------------------------------------------------------------------------------------------------------
# TRL worker (runs in its own process)


def trl_worker(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    os.environ["TQDM_DISABLE"] = "1"
    import torch

    torch.set_num_threads(spec["threads"])
    import transformers as tr
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

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
    trainer.train()
    with open(spec["result"], "w") as f:
        json.dump({"tokens": timer.tokens, "seconds": timer.seconds, "losses": timer.losses, "reference": reference,
                   "versions": {"trl": __import__("trl").__version__, "transformers": tr.__version__,
                                "torch": torch.__version__}}, f)


# ------------------------------------------------------------------------------------------------------------------


def main():
    args = parse_args()
    if args.trl_worker:
        return trl_worker(args.trl_worker)
    settings = [s for s in args.settings.split(",") if s]
    frameworks = [f for f in args.frameworks.split(",") if f]
    if any(s not in SETTINGS for s in settings) or any(f not in ("aln", "trl") for f in frameworks):
        raise SystemExit(f"--settings: subset of {','.join(SETTINGS)}; --frameworks: subset of aln,trl")
    binary = args.aln or next((p for p in ("build/bin/aln", "build/trainers/cli/aln")
                               if os.path.exists(os.path.join(ROOT, p))), "build/bin/aln")
    binary = os.path.join(ROOT, binary)
    if "aln" in frameworks and not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary}: no aln binary (build it first, or pass --aln PATH)")

    sizes = model_sizes(args)
    # One epoch holds exactly the pairs the run uses, so both frameworks see every pair once when there are enough.
    needed = (args.warmup + args.steps) * args.batch_size
    pairs, scanned = build_pairs(args.prompt_length, args.response_length, needed)
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
                   "loss": "dpo sigmoid, beta 0.1 (first step: ln 2 = 0.6931, the policy is the reference)",
                   "optimizer": f"AdamW lr {args.lr} constant, clip 1.0",
                   "aln_binary": os.path.relpath(binary, ROOT) if binary.startswith(ROOT + os.sep) else binary},
        "goal": {**GOAL, "met_means": "aln/trl tokens_per_second >= 1.5 and aln/trl peak_rss_bytes <= 0.7 in every "
                                      "setting"},
        "settings": {},
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
                entry["trl"] = run_trl(args, sizes, data_path, work, setting, precompute, env)
        aln, trl = entry.get("aln") or {}, entry.get("trl") or {}
        for side in (aln, trl):
            if side.get("tokens_per_step") is not None:
                side["tokens_per_step_as_expected"] = side["tokens_per_step"] == expected_tokens
        if aln.get("tokens_per_second") and trl.get("tokens_per_second"):
            tput = aln["tokens_per_second"] / trl["tokens_per_second"]
            mem = aln["peak_rss_bytes"] / trl["peak_rss_bytes"]
            entry["ratios_aln_over_trl"] = {"tokens_per_second": tput, "peak_rss_bytes": mem}
            entry["met"] = tput >= GOAL["throughput_ratio_at_least"] and mem <= GOAL["memory_ratio_at_most"]
        else:
            entry["ratios_aln_over_trl"] = None
            entry["met"] = None  # not measured
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
    errors = [f"{s}/{fw}: {e[fw]['error']}" for s, e in result["settings"].items() for fw in ("aln", "trl")
              if fw in e and "error" in e[fw]]
    if errors:
        raise SystemExit("; ".join(errors))


if __name__ == "__main__":
    main()
