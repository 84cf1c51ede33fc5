"""Whole-run equivalence with TRL's DPOTrainer: the same tiny model, data and batch order trained 10 steps of DPO
(sigmoid loss, beta 0.1, reference = the initial model) by `aln train` and by trl.DPOTrainer; see
run_parity_common.py for the setup.

Usage: dpo_run_parity.py ALN BATCH_ORDER_TOOL  (run from the repository root)

Per step, both sides report the loss, the pre-clipping gradient norm and the mean reward margin
beta*(log-ratio chosen - log-ratio rejected) of the batch they trained on. Tolerances (float32 on both sides, the
same maths in a different operation order: attention and matmul blocking, reductions):
- loss 2e-5 and gradient norm 1e-4 relative per step (measured on the 2-core machine: 2.1e-6 and 1.4e-5; the
  gradient norm drifts faster than the loss, as in sft_run_parity.py, not explained yet). One float32 forward/backward of this model agrees to ~1e-6
  (model_parity checks logits to 1e-5); the weights then drift apart by AdamW steps whose size is about lr per
  element, so the difference grows with the step but stays far below what a wrong schedule, batch or
  loss would give (the warm-up one step off changes step 1's loss by ~1e-3 relative, a different batch by ~10%).
- reward margin: 1e-5 absolute (it starts at exactly 0 and is ~1e-2 by step 10; measured 2.9e-6).
- final weights: max |Aln - TRL| <= 2e-5 over every tensor (measured 3.1e-7); 10 steps move them by up to ~5e-3
  (reported), so a single missing or extra update would be ~1e-4 or more.
"""
import sys
import time

import torch
import transformers as tr
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

import run_parity_common as common
from checks import check, finish, rel

ALN, ORDER_TOOL = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
work = common.new_workdir()
records = common.hh_records(common.STEPS * common.MICRO + 4)
train = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in records[:-4]]
common.write_jsonl(f"{work}/train.jsonl", train)
common.write_jsonl(f"{work}/eval.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in records[-4:]])
model_dir = common.tiny_model(f"{work}/init")

job = common.job_yaml(work, model_dir, "{dpo: {beta: 0.1, loss_type: sigmoid}}", f"{work}/train.jsonl",
                      f"{work}/eval.jsonl")
aln_log, order, aln_seconds = common.run_aln(ALN, ORDER_TOOL, work, job)
check("aln logged 10 steps", len(aln_log) == common.STEPS, f"{len(aln_log)}")
check("Aln's batches are 10 x 4 distinct training records",
      sorted(i for batch in order for i in batch) == list(range(1, len(train) + 1)), str(order))

# TRL on the same records in Aln's order (source lines are 1-based).
ordered = [train[i - 1] for batch in order for i in batch]
start = time.time()
model = tr.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
logs = common.StepLogs()
config = DPOConfig(**common.trl_common_args(work), beta=0.1, loss_type=["sigmoid"], max_length=None,
                   precompute_ref_log_probs=False)
trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(ordered),
                     processing_class=common.load_tokenizer(), callbacks=[logs])
# The batches TRL will see, decoded back to Aln's records (proves the order and the tokens are the same).
first = next(iter(trainer.get_train_dataloader()))
trainer.train()
trl_seconds = time.time() - start
trl_log = logs.logs
check("trl logged 10 steps", len(trl_log) == common.STEPS, f"{len(trl_log)}")
tok = common.load_tokenizer()
want = [train[i - 1]["prompt"] + train[i - 1]["chosen"] + "<|endoftext|>" for i in order[0]]
got = [tok.decode(ids[mask.bool()]) for ids, mask in zip(first["input_ids"][:common.MICRO],
                                                           first["attention_mask"][:common.MICRO])]
check("TRL's first batch holds Aln's first batch, in order", got == want, f"{got[0][:60]!r} vs {want[0][:60]!r}")

worst = {"loss": 0.0, "grad_norm": 0.0, "margin": 0.0}
for step, (a, t) in enumerate(zip(aln_log, trl_log)):
    d_loss = rel(a["loss"], t["loss"])
    d_norm = rel(a["grad_norm"], t["grad_norm"])
    d_margin = abs(a["metrics"]["rewards_margin"] - t["rewards/margins"])
    worst = {k: max(worst[k], v) for k, v in zip(worst, (d_loss, d_norm, d_margin))}
    check(f"step {step}: lr", abs(a["lr"] - t["learning_rate"]) <= 1e-12 * common.LR, f"{a['lr']} vs {t['learning_rate']}")
    check(f"step {step}: loss", d_loss <= 2e-5, f"aln {a['loss']:.9g} trl {t['loss']:.9g} rel {d_loss:.2e}")
    check(f"step {step}: grad norm", d_norm <= 1e-4,
          f"aln {a['grad_norm']:.9g} trl {t['grad_norm']:.9g} rel {d_norm:.2e}")
    check(f"step {step}: reward margin", d_margin <= 1e-5,
          f"aln {a['metrics']['rewards_margin']:.9g} trl {t['rewards/margins']:.9g} abs {d_margin:.2e}")

final = trainer.model
diff, tensors = common.max_param_diff(common.aln_final_weights(work), final)
moved = max((v.double() - initial[k].double()).abs().max().item() for k, v in final.state_dict().items())
check(f"final weights ({tensors} tensors)", tensors >= 19 and diff <= 2e-5, f"max |aln - trl| {diff:.2e}; "
      f"training moved them by up to {moved:.2e}")
print(f"max per-step differences: loss {worst['loss']:.2e} rel, grad norm {worst['grad_norm']:.2e} rel, "
      f"reward margin {worst['margin']:.2e} abs; final weights {diff:.2e} abs")
print(f"time: aln train {aln_seconds:.1f} s, TRL {trl_seconds:.1f} s")
finish()
