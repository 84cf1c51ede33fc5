"""TDPO and Ra-DPO (METHODS.md baselines and §3) against an independent float64 reference.

The reference below is written straight from METHODS.md with PyTorch autograd: full-vocabulary
log-softmax of both models, d = log pi_ref - log pi, the per-position KL / CVaR (torch.quantile,
linear interpolation, strict '>' mask, optionally per vocabulary half as torch.chunk splits it) /
entropic risk, per-sequence sums over response positions, the pair loss of both variants (the
stop-gradient of variant 2 with .detach()), and the gradient with respect to the policy logits by
autograd. Aln computes the same through its chunked two-pass kernels (values per chunk, then an
analytic gradient per chunk) in tests/parity/token_level_tool. Random logits, vocabulary 1000 and
1001 (odd: uneven halves), chunks that do not divide the positions. Tolerance 1e-6 relative (float64).
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from checks import check, finish, rel

TOOL = sys.argv[1]
torch.manual_seed(0)


def reference(z, r, y, seq, pairs, kind, mu, split, variant, beta, alpha):
    z = z.clone().requires_grad_(True)
    logp = F.log_softmax(z, -1)
    ref_logp = F.log_softmax(r, -1)
    ref_p = ref_logp.exp()
    d = ref_logp - logp
    if kind == "kl":
        term = (ref_p * d).sum(-1)
    elif kind == "cvar":
        parts = torch.chunk(d, 2, dim=-1) if split else (d,)
        mask = torch.cat([(p > torch.quantile(p, 1 - mu, dim=-1, keepdim=True)).double() for p in parts], -1)
        term = (ref_p * d * mask).sum(-1)
    else:  # erm: (1/mu) log E_ref[exp(mu d)]
        term = torch.log((ref_p * torch.exp(mu * d)).sum(-1)) / mu
    lp = logp.gather(1, y[:, None]).squeeze(1)
    lr = ref_logp.gather(1, y[:, None]).squeeze(1)
    zeros = torch.zeros(2 * pairs, dtype=torch.float64)
    s_lp, s_lr, s_d = zeros.index_add(0, seq, lp), zeros.index_add(0, seq, lr), zeros.index_add(0, seq, term)
    h = (s_lp[:pairs] - s_lr[:pairs]) - (s_lp[pairs:] - s_lr[pairs:])
    d_w, d_l = s_d[:pairs], s_d[pairs:]
    penalty = (d_l - d_w) if variant == 1 else alpha * (d_l - d_w.detach())
    loss = -F.logsigmoid(beta * (h - penalty)).mean()
    (grad,) = torch.autograd.grad(loss, z)
    return loss.item(), d_w.detach(), d_l.detach(), grad


def run_tool(case_dir, meta, z, r, y, seq):
    z.numpy().astype("<f8").tofile(case_dir / "policy.bin")
    r.numpy().astype("<f8").tofile(case_dir / "reference.bin")
    y.numpy().astype("<i8").tofile(case_dir / "targets.bin")
    seq.numpy().astype("<i8").tofile(case_dir / "sequence.bin")
    (case_dir / "meta.json").write_text(json.dumps(meta))
    subprocess.run([TOOL, str(case_dir)], check=True)
    out = json.loads((case_dir / "out.json").read_text())
    grad = np.fromfile(case_dir / "grad.bin", dtype="<f8").reshape(z.shape)
    return out, torch.from_numpy(grad)


with tempfile.TemporaryDirectory() as tmp:
    case_dir = pathlib.Path(tmp)
    pairs = 3
    for vocab in (1000, 1001):
        # 6 sequences with 2..9 scored positions each, positions interleaved like a flattened batch.
        lengths = torch.randint(2, 10, (2 * pairs,))
        seq = torch.repeat_interleave(torch.arange(2 * pairs), lengths)
        n = seq.numel()
        z = torch.randn(n, vocab, dtype=torch.float64) * 2
        r = z + torch.randn(n, vocab, dtype=torch.float64) * 0.7  # a reference near the policy
        y = torch.randint(0, vocab, (n,))
        for kind, mu, split in [("kl", 0, False), ("cvar", 0.95, False), ("cvar", 0.95, True), ("cvar", 0.7, True),
                                ("erm", 5.0, False)]:
            for variant in (1, 2):
                beta, alpha = 0.1, 0.5
                meta = {"pairs": pairs, "vocab": vocab, "positions": n, "kind": kind, "mu": mu, "split": split,
                        "variant": variant, "beta": beta, "alpha": alpha, "chunk": 7}
                loss, d_w, d_l, grad = reference(z, r, y, seq, pairs, kind, mu, split, variant, beta, alpha)
                out, aln_grad = run_tool(case_dir, meta, z, r, y, seq)
                name = f"V={vocab} {kind}{' split' if split else ''} mu={mu} variant {variant}"
                check(f"{name}: loss", rel(out["loss"], loss) < 1e-6, f"aln {out['loss']:.12g} ref {loss:.12g}")
                check(f"{name}: divergence sums", max(rel(out["divergence_chosen"], d_w),
                                                      rel(out["divergence_rejected"], d_l)) < 1e-6)
                check(f"{name}: gradient wrt policy logits", rel(aln_grad, grad) < 1e-6,
                      f"max rel {rel(aln_grad, grad):.2e}")
    # The stop-gradient matters: variant 2's gradient differs from the same loss without it.
    meta["kind"], meta["variant"], meta["split"], meta["mu"] = "kl", 2, False, 0
    _, _, _, with_sg = reference(z, r, y, seq, pairs, "kl", 0, False, 2, 0.1, 0.5)
    out, aln_grad = run_tool(case_dir, meta, z, r, y, seq)
    zz = z.clone().requires_grad_(True)
    logp, ref_logp = F.log_softmax(zz, -1), F.log_softmax(r, -1)
    term = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    zeros = torch.zeros(2 * pairs, dtype=torch.float64)
    s_lp = zeros.index_add(0, seq, logp.gather(1, y[:, None]).squeeze(1))
    s_lr = zeros.index_add(0, seq, ref_logp.gather(1, y[:, None]).squeeze(1))
    s_d = zeros.index_add(0, seq, term)
    h = (s_lp[:pairs] - s_lr[:pairs]) - (s_lp[pairs:] - s_lr[pairs:])
    no_sg = -F.logsigmoid(0.1 * (h - 0.5 * (s_d[pairs:] - s_d[:pairs]))).mean()
    (grad_no_sg,) = torch.autograd.grad(no_sg, zz)
    check("variant 2 applies the stop-gradient to D_w (differs from no stop-gradient)",
          rel(aln_grad, with_sg) < 1e-6 and rel(aln_grad, grad_no_sg) > 1e-4,
          f"vs sg {rel(aln_grad, with_sg):.1e}, vs no sg {rel(aln_grad, grad_no_sg):.1e}")

finish()
