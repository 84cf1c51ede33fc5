"""HAIR's hardness-aware scaling against a float64 reference written from METHODS.md §5.

Fixed random inputs (seeded): sentence embeddings of G samples per prompt (0 to 5 sentences each, so
an empty output appears) and of each prompt's demonstration, shadow rewards and reward gaps with
planted outliers. The reference loops over sentences in plain Python floats:
  s_kl = cos(o_k, d_l); W = (1/K) sum_k max_l s_kl (0 without sentences); delta = 1 - W;
  alpha^D_i = sigmoid(delta_i) / sigmoid(mean_group delta);
  kept: (R_i - mean R)^2 <= tau; R_P = mean of kept (mean R when none); alpha^M = sigmoid(R_P) / sigmoid(mean R);
  A_i = alpha^D_i alpha^M (r_i - mean) / (std_unbiased + 1e-4).
Aln's numbers come from tests/parity/hair_tool. Tolerance 1e-12 relative (both float64).
"""
import json
import math
import random
import subprocess
import sys

from checks import check, finish, rel

TOOL = sys.argv[1]
rng = random.Random(7)
sig = lambda x: 1 / (1 + math.exp(-x))


def cos(a, b):
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (max(na, 1e-12) * max(nb, 1e-12))


def reference(case):
    g = case["group_size"]
    w = []
    for r, out in enumerate(case["outputs"]):
        demo = case["demos"][r // g]
        w.append(sum(max(cos(o, d) for d in demo) for o in out) / len(out) if out else 0.0)
    delta = [1 - x for x in w]
    alpha_d, alpha_m, kept, adv = [], [], [], []
    for s in range(0, len(delta), g):
        grp = delta[s:s + g]
        m = sum(grp) / g
        alpha_d += [sig(d) / sig(m) for d in grp]
        gaps = case["gaps"][s:s + g]
        mean_r = sum(gaps) / g
        keep = [(x - mean_r) ** 2 <= case["tau"] for x in gaps]
        kept += [1.0 if k else 0.0 for k in keep]
        kept_vals = [x for x, k in zip(gaps, keep) if k]
        r_p = sum(kept_vals) / len(kept_vals) if kept_vals else mean_r
        am = sig(r_p) / sig(mean_r)
        alpha_m.append(am)
        rw = case["rewards"][s:s + g]
        mu = sum(rw) / g
        sd = math.sqrt(sum((x - mu) ** 2 for x in rw) / (g - 1))
        adv += [alpha_d[s + i] * am * (rw[i] - mu) / (sd + 1e-4) for i in range(g)]
    return {"W": w, "alpha_d": alpha_d, "alpha_m": alpha_m, "kept": kept, "advantages": adv}


cases = []
for g, prompts, hidden, tau in ((4, 3, 8, 1.0), (8, 2, 16, 0.05), (2, 4, 4, 10.0)):
    outputs = [[[rng.gauss(0, 1) for _ in range(hidden)] for _ in range(rng.randint(0, 5))]
               for _ in range(g * prompts)]
    demos = [[[rng.gauss(0, 1) for _ in range(hidden)] for _ in range(rng.randint(1, 4))] for _ in range(prompts)]
    rewards = [rng.gauss(0, 1) for _ in range(g * prompts)]
    gaps = [rng.gauss(0, 0.3) for _ in range(g * prompts)]
    gaps[0] += 5  # an outlier in the first group
    cases.append({"group_size": g, "hidden": hidden, "tau": tau, "outputs": outputs, "demos": demos,
                  "rewards": rewards, "gaps": gaps})
# A sample that repeats the demonstration's sentences: W = 1, delta = 0.
c = cases[0]
c["outputs"][1] = [list(v) for v in c["demos"][0]]

out = json.loads(subprocess.run([TOOL], input=json.dumps(cases), capture_output=True, text=True, check=True).stdout)
for i, (case, got) in enumerate(zip(cases, out)):
    want = reference(case)
    name = f"G={case['group_size']} tau={case['tau']}"
    for key in ("W", "alpha_d", "alpha_m", "advantages"):
        check(f"{name}: {key}", rel(got[key], want[key]) < 1e-12, f"rel {rel(got[key], want[key]):.2e}")
    check(f"{name}: outlier mask", got["kept"] == want["kept"], f"kept {sum(want['kept'])}/{len(want['kept'])}")
    check(f"{name}: an empty sample has W = 0", all(w == 0 for w, o in zip(got["W"], case["outputs"]) if not o))
check("a sample made of the demonstration's sentences has W = 1", abs(out[0]["W"][1] - 1) < 1e-12)
check("the planted outlier is dropped", out[0]["kept"][0] == 0 and out[0]["alpha_m"][0] != 1)
finish()
