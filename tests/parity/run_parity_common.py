"""Shared by dpo_run_parity.py and sft_run_parity.py: one tiny model, one data set and one batch order,
trained by `aln train` and by a TRL trainer.

- Model: a random Llama (GPT-2 vocabulary, hidden 32, 2 layers, 4 heads / 2 KV heads, tied embeddings), written
  by transformers as config.json + model.safetensors; both sides start from that directory. float32: Aln's
  model.dtype has no float64.
- Data: the first single-turn HH-RLHF dialogues of examples/data whose prompt and responses are at most 40 GPT-2
  tokens, so neither side truncates. The prompt is the HH text ("\\n\\nHuman: ...\\n\\nAssistant:") and each
  response keeps its leading space, so Aln's ids (prompt, response, end-of-text id) and TRL's (prompt +
  response + "<|endoftext|>" as text) are the same tokens.
- Order: `batch_order_tool` prints the sources of each step's batch as `aln train` draws them (Aln's seeded
  shuffle); TRL gets the records in that order with train_sampling_strategy="sequential".
- Optimisation: AdamW (lr, betas, eps, weight decay 0, max_grad_norm 1), cosine schedule with 3 warm-up steps in
  the transformers convention (Aln's optimizer.warmup: start_at_zero), micro-batch 4, 10 steps, no dropout.
"""
import gzip
import json
import os
import subprocess
import tempfile
import time

import tokenizers
import torch
import transformers as tr

HH = "examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz"
GPT2_DIR = "examples/data/tokenizers/gpt2"
ASSISTANT = "\n\nAssistant:"
STEPS, MICRO, LR, WARMUP = 10, 4, 1e-3, 3


def hh_records(n, max_tokens=40):
    """(prompt, chosen, rejected) of the first n short single-turn HH dialogues, in file order."""
    tok = tokenizers.Tokenizer.from_file(os.path.join(GPT2_DIR, "tokenizer.json"))
    out = []
    with gzip.open(HH, "rt") as f:
        for line in f:
            row = json.loads(line)
            chosen, rejected = row["chosen"], row["rejected"]
            cut = chosen.find(ASSISTANT) + len(ASSISTANT)
            prompt = chosen[:cut]
            if prompt.count("\n\nHuman:") != 1 or not rejected.startswith(prompt):
                continue
            c, r = chosen[cut:], rejected[cut:]
            if not c.strip() or not r.strip() or c == r or ASSISTANT in c or ASSISTANT in r:
                continue
            if max(len(tok.encode(t).ids) for t in (prompt, c, r)) > max_tokens:
                continue
            out.append((prompt, c, r))
            if len(out) == n:
                return out
    raise RuntimeError(f"only {len(out)} short single-turn dialogues in {HH}")


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def tiny_model(out_dir):
    torch.manual_seed(0)
    config = tr.LlamaConfig(vocab_size=50257, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                            tie_word_embeddings=True, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256,
                            attention_dropout=0.0, torch_dtype="float32")
    model = tr.LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir


def job_yaml(work, model_dir, trainer, train_file, eval_file):
    return f"""name: run-parity
output_dir: {work}/aln
seed: 42
model: {{path: {model_dir}, tokenizer: {GPT2_DIR}/tokenizer.json, chat_format: hh, dtype: float32}}
trainer: {trainer}
data:
  train: [{{path: {train_file}}}]
  eval: [{{path: {eval_file}}}]
  max_prompt_length: 512
  max_response_length: 512
optimizer: {{lr: {LR}, schedule: cosine, warmup_steps: {WARMUP}, warmup: start_at_zero, max_steps: {STEPS},
             micro_batch_size: {MICRO}, max_grad_norm: 1.0, weight_decay: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8}}
metrics: {{enabled: false, progress_bar: false}}
checkpoint: {{every_steps: 0}}
runtime: {{threads: 2}}
"""


def run_aln(aln, order_tool, work, job_text):
    """Trains with `aln train`; returns (per-step log lines, batch order as lists of source line numbers, seconds)."""
    job = os.path.join(work, "job.yaml")
    with open(job, "w") as f:
        f.write(job_text)
    order = json.loads(subprocess.run([order_tool, job, str(STEPS)], capture_output=True, text=True,
                                      check=True).stdout)
    start = time.time()
    run = subprocess.run([aln, "train", job], capture_output=True, text=True)
    seconds = time.time() - start
    if run.returncode != 0:
        raise RuntimeError(f"aln train failed ({run.returncode}):\n{run.stderr[-3000:]}")
    with open(os.path.join(work, "aln", "train_log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    lines = [[int(source.rsplit(":", 1)[1]) for source in batch] for batch in order]
    return log, lines, seconds


def trl_common_args(work):
    """TrainingArguments shared by DPOConfig and SFTConfig: the job's optimisation settings."""
    return dict(output_dir=os.path.join(work, "trl"), per_device_train_batch_size=MICRO, gradient_accumulation_steps=1,
                max_steps=STEPS, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=WARMUP,
                optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
                max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], seed=42, use_cpu=True,
                dataloader_num_workers=0, train_sampling_strategy="sequential", disable_tqdm=True,
                bf16=False, fp16=False)


class StepLogs(tr.TrainerCallback):
    """Collects what the trainer logs each step (logging_steps=1)."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append(dict(logs))


def load_tokenizer():
    tok = tr.AutoTokenizer.from_pretrained(GPT2_DIR)
    tok.pad_token = tok.eos_token  # GPT-2 has none; Aln pads with the end-of-text id too
    return tok


def aln_final_weights(work):
    from safetensors.torch import load_file
    return load_file(os.path.join(work, "aln", "final", "model.safetensors"))


def max_param_diff(aln_weights, model):
    """max |aln - trl| over the parameters both hold, and the largest |trl - initial| (how far training moved)."""
    worst, names = 0.0, 0
    for name, value in model.state_dict().items():
        if name in aln_weights:
            worst = max(worst, (aln_weights[name].double() - value.detach().double()).abs().max().item())
            names += 1
    return worst, names


def new_workdir():
    return tempfile.mkdtemp(prefix="aln_run_parity_")
