"""GRPO's loss against TRL's own GRPOTrainer._compute_loss, and group advantages against the formula.

TRL computes the loss from a model's per-token log-probs inside GRPOTrainer._compute_loss. We call
that method on a stand-in trainer whose _get_per_token_logps_and_entropies returns fixed per-token
log-probs (a float64 leaf), with the old and reference log-probs, advantages and completion masks as
inputs, so TRL's code computes the loss and autograd gives its gradient. Aln's loss and gradient come
from tests/parity/grpo_tool (float64). Cases: on-policy (old = logps) and off-policy (ratios away from
1, so clipping bites on both sides), beta 0 and 0.04, TRL's "grpo" (sequence mean) and "bnpo" (token
mean: what "dapo" is in one process) normalisations, ragged masks. Tolerance 1e-6 relative.
"""
import collections
import json
import subprocess
import sys
import types

import torch
from trl.trainer.grpo_trainer import GRPOTrainer

from checks import check, finish, rel

TOOL = sys.argv[1]
torch.manual_seed(0)


def trl_loss(logps, old, ref, adv, mask, eps_low, eps_high, beta, loss_type):
    leaf = logps.clone().requires_grad_(True)
    identity = lambda x, **_: x
    fake = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), beta=beta, loss_type=loss_type, epsilon_low=eps_low,
        epsilon_high=eps_high, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", use_vllm=False, aux_loss_enabled=False, _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=1, max_completion_length=logps.shape[1],
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        accelerator=types.SimpleNamespace(num_processes=1, reduce=identity, gather=identity,
                                          gather_for_metrics=identity),
        _metrics={"train": collections.defaultdict(list), "eval": collections.defaultdict(list)},
        _get_per_token_logps_and_entropies=lambda *a, **k: (leaf, torch.zeros_like(leaf), None),
    )
    b, t = logps.shape
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1, dtype=torch.long),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "num_items_in_batch": mask.sum()}
    if old is not None:
        inputs["old_per_token_logps"] = old
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.item(), grad, fake._metrics["train"]


cases, expected = [], []
for off_policy in (False, True):
    for beta in (0.0, 0.04):
        for loss_type, norm in (("grpo", "sequence"), ("bnpo", "token")):
            rows, length = 8, 9
            logps = -torch.rand(rows, length, dtype=torch.float64) * 4
            old = logps + torch.randn(rows, length, dtype=torch.float64) * 0.4 if off_policy else None
            ref = logps + torch.randn(rows, length, dtype=torch.float64) * 0.3
            adv = torch.randn(rows, dtype=torch.float64)
            lengths = torch.randint(1, length + 1, (rows,))
            mask = (torch.arange(length) < lengths[:, None]).long()
            loss, grad, metrics = trl_loss(logps, old, ref if beta else None, adv, mask, 0.2, 0.28, beta, loss_type)
            case = {"logps": logps.tolist(), "advantages": adv.tolist(), "mask": mask.double().tolist(),
                    "epsilon_low": 0.2, "epsilon_high": 0.28, "beta": beta, "normalization": norm}
            if old is not None:
                case["old_logps"] = old.tolist()
            if beta:
                case["ref_logps"] = ref.tolist()
            cases.append(case)
            expected.append((f"{'off' if off_policy else 'on'}-policy beta={beta} {loss_type}", loss, grad, metrics))
groups = torch.randn(4 * 8, dtype=torch.float64)
groups[8:16] = 1.5  # a group with equal rewards: advantages 0, not NaN
cases.append({"rewards": groups.tolist(), "group_size": 8, "scale": True})
cases.append({"rewards": groups.tolist(), "group_size": 8, "scale": False})

out = json.loads(subprocess.run([TOOL], input=json.dumps(cases), capture_output=True, text=True, check=True).stdout)
for (name, loss, grad, metrics), got in zip(expected, out):
    check(f"{name}: loss", rel(got["loss"], loss) < 1e-6, f"aln {got['loss']:.12g} trl {loss:.12g}")
    check(f"{name}: gradient", rel(torch.tensor(got["grad"]).view_as(grad), grad) < 1e-6)
    if "kl" in metrics:
        check(f"{name}: KL metric", abs(got["kl"] - metrics["kl"][0]) < 1e-9)
    check(f"{name}: clip ratios ({got['clip_low']}, {got['clip_high']} vs {metrics['clip_ratio/low_mean'][0]}, {metrics['clip_ratio/high_mean'][0]})", abs(got["clip_low"] - metrics["clip_ratio/low_mean"][0]) < 1e-6 and
          abs(got["clip_high"] - metrics["clip_ratio/high_mean"][0]) < 1e-6)  # TRL divides in float32
g = groups.view(-1, 8)
scaled = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).reshape(-1)
check("group advantages (r - mean) / (std + 1e-4)", rel(out[-2]["advantages"], scaled) < 1e-12)
check("unscaled group advantages r - mean", rel(out[-1]["advantages"], (g - g.mean(1, keepdim=True)).reshape(-1)) < 1e-12)
check("a group with equal rewards has zero advantages", max(abs(x) for x in out[-2]["advantages"][8:16]) == 0)
finish()
