"""Whole-run equivalence with TRL's SFTTrainer: the same tiny model, data and batch order trained 10 steps of SFT
(mean NLL over the completion tokens of the batch) by `aln train` and by trl.SFTTrainer on prompt/completion
records (TRL's completion-only loss); see run_parity_common.py for the setup.

Usage: sft_run_parity.py ALN BATCH_ORDER_TOOL  (run from the repository root)

Per step: the loss 2e-5 relative, the pre-clipping gradient norm 2e-4 relative; final weights 2e-5 absolute. The
reasoning is dpo_run_parity.py's: float32 on both sides, the same maths in another operation order, while a wrong
batch, schedule step or normalisation (per sequence instead of per token) moves the loss by 1e-3 relative or more.
Measured on the 2-core machine: loss 1.8e-7, final weights 7.7e-7, but the gradient norm drifts to 8.1e-5 relative
by step 7 (2e-5 at step 3): not explained yet. AdamW is insensitive to the gradient's scale, which is why a norm
difference of that size leaves the weights equal to 1e-6; the bound is 2.5x the measured value.
"""
import sys
import time

import torch
import transformers as tr
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

import run_parity_common as common
from checks import check, finish, rel

ALN, ORDER_TOOL = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
work = common.new_workdir()
records = common.hh_records(common.STEPS * common.MICRO + 4)
train = [{"prompt": p, "completion": c} for p, c, _ in records[:-4]]
common.write_jsonl(f"{work}/train.jsonl", train)
common.write_jsonl(f"{work}/eval.jsonl", [{"prompt": p, "completion": c} for p, c, _ in records[-4:]])
model_dir = common.tiny_model(f"{work}/init")

job = common.job_yaml(work, model_dir, "{sft: {}}", f"{work}/train.jsonl", f"{work}/eval.jsonl")
aln_log, order, aln_seconds = common.run_aln(ALN, ORDER_TOOL, work, job)
check("aln logged 10 steps", len(aln_log) == common.STEPS, f"{len(aln_log)}")
check("Aln's batches are 10 x 4 distinct training records",
      sorted(i for batch in order for i in batch) == list(range(1, len(train) + 1)), str(order))

ordered = [train[i - 1] for batch in order for i in batch]
start = time.time()
model = tr.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
logs = common.StepLogs()
config = SFTConfig(**common.trl_common_args(work), max_length=None, packing=False, completion_only_loss=True)
trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(ordered),
                     processing_class=common.load_tokenizer(), callbacks=[logs])
first = next(iter(trainer.get_train_dataloader()))
trainer.train()
trl_seconds = time.time() - start
trl_log = logs.logs
check("trl logged 10 steps", len(trl_log) == common.STEPS, f"{len(trl_log)}")
tok = common.load_tokenizer()
want = [train[i - 1]["prompt"] + train[i - 1]["completion"] + "<|endoftext|>" for i in order[0]]
got = [tok.decode(ids[mask.bool()]) for ids, mask in zip(first["input_ids"], first["attention_mask"])]
check("TRL's first batch holds Aln's first batch, in order", got == want, f"{got[0][:60]!r} vs {want[0][:60]!r}")
# The loss counts the same tokens: the completion and its end-of-text, never the prompt.
aln_tokens = aln_log[0]["metrics"]["response_tokens"]
trl_tokens = int((first["labels"][:, 1:] != -100).sum())
check("step 0: both average over the same completion tokens", aln_tokens == trl_tokens, f"{aln_tokens} vs {trl_tokens}")

worst = {"loss": 0.0, "grad_norm": 0.0}
for step, (a, t) in enumerate(zip(aln_log, trl_log)):
    d_loss = rel(a["loss"], t["loss"])
    d_norm = rel(a["grad_norm"], t["grad_norm"])
    worst = {k: max(worst[k], v) for k, v in zip(worst, (d_loss, d_norm))}
    check(f"step {step}: lr", abs(a["lr"] - t["learning_rate"]) <= 1e-12 * common.LR, f"{a['lr']} vs {t['learning_rate']}")
    check(f"step {step}: loss", d_loss <= 2e-5, f"aln {a['loss']:.9g} trl {t['loss']:.9g} rel {d_loss:.2e}")
    check(f"step {step}: grad norm", d_norm <= 2e-4,
          f"aln {a['grad_norm']:.9g} trl {t['grad_norm']:.9g} rel {d_norm:.2e}")

final = trainer.model
diff, tensors = common.max_param_diff(common.aln_final_weights(work), final)
moved = max((v.double() - initial[k].double()).abs().max().item() for k, v in final.state_dict().items())
check(f"final weights ({tensors} tensors)", tensors >= 19 and diff <= 2e-5, f"max |aln - trl| {diff:.2e}; "
      f"training moved them by up to {moved:.2e}")
print(f"max per-step differences: loss {worst['loss']:.2e} rel, grad norm {worst['grad_norm']:.2e} rel; "
      f"final weights {diff:.2e} abs")
print(f"time: aln train {aln_seconds:.1f} s, TRL {trl_seconds:.1f} s")
finish()
