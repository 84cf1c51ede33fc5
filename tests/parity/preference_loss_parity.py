"""DPO-family losses against TRL's DPOTrainer, and SafeDPO against a float64 reference of METHODS.md §1.

TRL computes its loss inside DPOTrainer._compute_loss from a model's per-token log-probs. We call that
method with a stand-in model that returns fixed per-token log-probs (and the reference sums given as
precomputed inputs), so TRL's own code computes the loss and autograd gives its gradient. Aln's loss
and gradient come from tests/parity/preference_loss_tool (float64). Tolerance: 1e-6 relative.

Note: TRL 1.16's `sigmoid` loss has no label smoothing (older TRL had it); we compare sigmoid at
eps = 0 with TRL and check eps > 0 against the METHODS.md formula directly.
"""
import collections
import json
import subprocess
import sys
import types

import torch
import torch.nn.functional as F
from trl.trainer.dpo_trainer import DPOTrainer

from checks import check, finish

TOOL = sys.argv[1]
torch.manual_seed(0)


def random_case(pairs=6, length=7):
    chosen = -torch.rand(pairs, length, dtype=torch.float64) * 3
    rejected = -torch.rand(pairs, length, dtype=torch.float64) * 3
    lengths_c = torch.randint(1, length + 1, (pairs,))
    lengths_r = torch.randint(1, length + 1, (pairs,))
    mask_c = (torch.arange(length) < lengths_c[:, None]).double()
    mask_r = (torch.arange(length) < lengths_r[:, None]).double()
    ref_c = (chosen * mask_c).sum(1) + torch.randn(pairs, dtype=torch.float64)
    ref_r = (rejected * mask_r).sum(1) + torch.randn(pairs, dtype=torch.float64)
    return chosen, rejected, mask_c, mask_r, ref_c, ref_r


def trl_loss(loss_type, beta, eps, chosen, rejected, mask_c, mask_r, ref_c, ref_r):
    pairs, length = chosen.shape
    per_token = torch.cat([chosen, rejected]).clone().requires_grad_(True)
    completion_mask = torch.cat([mask_c, mask_r])
    # TRL shifts the completion mask by one (labels are next tokens); pad one leading column so the
    # shifted mask is exactly ours and IPO's token counts (unshifted mask) equal the response lengths.
    full_mask = torch.cat([torch.zeros(2 * pairs, 1, dtype=torch.float64), completion_mask], 1)

    class StandInModel:
        training = True

        def __call__(self, **kwargs):
            masked = per_token * completion_mask  # TRL's fused head zeroes non-completion positions
            return types.SimpleNamespace(log_probs=masked, entropy=torch.zeros_like(masked),
                                         mean_logits=torch.zeros_like(masked),
                                         is_top1=torch.zeros_like(masked, dtype=torch.bool))

    model = StandInModel()
    identity = lambda x: x  # noqa: E731
    fake = types.SimpleNamespace(
        model=model, accelerator=types.SimpleNamespace(device="cpu", gather_for_metrics=identity, gather=identity),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=eps, use_weighting=False,
        _metrics={"train": collections.defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(2 * pairs, length + 1, dtype=torch.long), "attention_mask": full_mask.long(),
              "completion_mask": full_mask.long(), "ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r}
    loss = DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)
    if isinstance(loss, tuple):
        loss = loss[0]
    loss.backward()
    grad = per_token.grad * completion_mask
    return loss.item(), grad[:pairs], grad[pairs:]


def reference_loss(kind, beta, eps, delta, chosen, rejected, mask_c, mask_r, ref_c, ref_r, unsafe_c, unsafe_r):
    """METHODS.md written out in float64 torch (independent of Aln and of TRL)."""
    c = chosen.clone().requires_grad_(True)
    r = rejected.clone().requires_grad_(True)
    h = ((c * mask_c).sum(1) - ref_c) - ((r * mask_r).sum(1) - ref_r)
    if kind == "sigmoid":
        per = -F.logsigmoid(beta * h) * (1 - eps) - F.logsigmoid(-beta * h) * eps
    else:  # safedpo
        per = -F.logsigmoid(beta * h - (unsafe_r - unsafe_c) * delta)
    loss = per.mean()
    loss.backward()
    return loss.item(), c.grad * mask_c, r.grad * mask_r


def run_tool(cases):
    out = subprocess.run([TOOL], input=json.dumps({"cases": cases}), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def close(a, b, tol=1e-6):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = max(b.abs().max().item(), 1e-12)
    return (a - b).abs().max().item() / scale <= tol, (a - b).abs().max().item() / scale


def case_json(loss_type, beta, eps, data, delta=0.0, unsafe=None):
    chosen, rejected, mask_c, mask_r, ref_c, ref_r = data
    d = {"loss_type": loss_type, "beta": beta, "label_smoothing": eps, "delta": delta,
         "chosen_logps": chosen.tolist(), "rejected_logps": rejected.tolist(), "chosen_mask": mask_c.tolist(),
         "rejected_mask": mask_r.tolist(), "ref_chosen": ref_c.tolist(), "ref_rejected": ref_r.tolist()}
    if unsafe is not None:
        d["unsafe_chosen"], d["unsafe_rejected"] = unsafe[0].tolist(), unsafe[1].tolist()
    return d


trl_cases = [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("hinge", 0.1, 0.0), ("hinge", 2.0, 0.0),
             ("ipo", 0.1, 0.0), ("ipo", 0.7, 0.0), ("robust", 0.1, 0.1), ("robust", 0.3, 0.25)]
datas = [random_case() for _ in trl_cases]
ours = run_tool([case_json(t, b, e, d) for (t, b, e), d in zip(trl_cases, datas)])
for (t, b, e), d, o in zip(trl_cases, datas, ours):
    loss, gc, gr = trl_loss(t, b, e, *d)
    ok_l, err_l = close(o["loss"], loss)
    ok_g, err_g = close(o["grad_chosen"] + o["grad_rejected"], torch.cat([gc, gr]).tolist())
    check(f"dpo {t} beta={b} eps={e} vs TRL: loss", ok_l, f"rel err {err_l:.1e}")
    check(f"dpo {t} beta={b} eps={e} vs TRL: gradient", ok_g, f"rel err {err_g:.1e}")

# Control: the comparison can fail (TRL's hinge against Aln's sigmoid on the same data must differ).
hinge_trl = trl_loss("hinge", 0.1, 0.0, *datas[0])[0]
check("control: a different loss type is detected", not close(ours[0]["loss"], hinge_trl)[0])

# Label smoothing on sigmoid (not in TRL 1.16): against the METHODS.md formula.
d = random_case()
o = run_tool([case_json("sigmoid", 0.2, 0.15, d)])[0]
loss, gc, gr = reference_loss("sigmoid", 0.2, 0.15, 0.0, *d, None, None)
check("dpo sigmoid eps=0.15 vs float64 reference: loss", close(o["loss"], loss)[0])
check("dpo sigmoid eps=0.15 vs float64 reference: gradient", close(o["grad_chosen"] + o["grad_rejected"], torch.cat([gc, gr]).tolist())[0])

# SafeDPO: pairs covering every transform outcome. Flags are for the helpfulness-preferred (w) and
# other (l) responses before T; T keeps (w safe), swaps (only w unsafe) or drops (both unsafe).
flags_w = torch.tensor([0, 0, 1, 1, 0, 1], dtype=torch.float64)
flags_l = torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.float64)
for delta in (10.0, 0.0, 3.5):
    chosen, rejected, mask_c, mask_r, ref_c, ref_r = random_case()
    keep = flags_w == 0
    swap = (flags_w == 1) & (flags_l == 0)
    # Apply T in the reference (swap the two sides of swapped pairs, drop pairs where both are unsafe).
    tc = torch.where(swap[:, None], rejected, chosen)[keep | swap]
    tr = torch.where(swap[:, None], chosen, rejected)[keep | swap]
    tmc = torch.where(swap[:, None], mask_r, mask_c)[keep | swap]
    tmr = torch.where(swap[:, None], mask_c, mask_r)[keep | swap]
    trc = torch.where(swap, ref_r, ref_c)[keep | swap]
    trr = torch.where(swap, ref_c, ref_r)[keep | swap]
    uw = torch.where(swap, flags_l, flags_w)[keep | swap]
    ul = torch.where(swap, flags_w, flags_l)[keep | swap]
    check(f"safedpo transform leaves no unsafe preferred response (delta={delta})", bool((uw == 0).all()))
    data = (tc, tr, tmc, tmr, trc, trr)
    o = run_tool([case_json("safedpo", 0.1, 0.0, data, delta, (uw, ul))])[0]
    loss, gc, gr = reference_loss("safedpo", 0.1, 0.0, delta, *data, uw, ul)
    check(f"safedpo delta={delta} vs float64 reference: loss", close(o["loss"], loss)[0], f"{o['loss']} vs {loss}")
    check(f"safedpo delta={delta} vs float64 reference: gradient",
          close(o["grad_chosen"] + o["grad_rejected"], torch.cat([gc, gr]).tolist())[0])

finish()
