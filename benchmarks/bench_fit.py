#!/usr/bin/env python
"""Benchmark: fitting the mixture laws (SPEC §2) at 8 domains, and the optimiser's convergence.

Data: a loss table generated from *known* joint-law parameters (one law per domain loss; each
domain helps its own loss most) on ``--mixtures`` mixtures spread over the simplex with every
weight ≥ ``--min-weight``, model sizes 5e7/1e8/2e8 (fit) and 4e8 (held out), 5 checkpoints per
run (2.5–40 tokens per parameter), ``--noise`` relative Gaussian noise. Synthetic by
construction: the truth is known, so the numbers say how well and how fast the fit recovers it.

For every target (each domain's loss and their mean) it fits the additive law (5+2k = 21
parameters) and the joint law (5+4k = 37, warm-started from the additive fit) with the library
defaults (random search, screening, basin-hopping with L-BFGS-B, polish), and prints the fit
times, train/held-out MRE, the Huber objectives — the joint objective must be ≤ the additive
one on every target, and ≤ the objective of the true parameters (a feasible point: a fit that
does worse has not converged) — and the Table-2-style Markdown table. Then h* for each target at
N = 1e9, D = 2e10 from the fitted and from the true law.

    python benchmarks/bench_fit.py                      # 8 domains × 20 mixtures → 300 fit points
    python benchmarks/bench_fit.py --quick              # 3 targets, lighter search
    python benchmarks/bench_fit.py --domains 8 --mixtures 30 --niter 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from seedbed.mixture import fit as F  # noqa: E402
from seedbed.mixture import laws  # noqa: E402
from seedbed.mixture.optimize import optimal_mixture  # noqa: E402
from seedbed.mixture.recovery import law_table  # noqa: E402

SIZES = (5e7, 1e8, 2e8, 4e8)
RATIOS = (2.5, 5, 10, 20, 40)


def make_table(k, m, min_w, noise, seed):
    doms = [f"d{i}" for i in range(k)]
    df, truth = law_table(doms, "joint", m, SIZES, RATIOS, min_weight=min_w, noise=noise, seed=seed)
    return F.load_table(df), truth, doms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--domains", type=int, default=8)
    ap.add_argument("--mixtures", type=int, default=20)
    ap.add_argument("--min-weight", type=float, default=0.05)
    ap.add_argument("--noise", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", type=int, default=None, help="fit only the first T domain targets (+ mean)")
    ap.add_argument("--n-starts", type=int, default=3)
    ap.add_argument("--niter", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="2 domain targets + mean, n_starts=2, niter=2")
    a = ap.parse_args()
    if a.quick:
        a.targets, a.n_starts, a.niter = 2, 2, 2
    table, truth, doms = make_table(a.domains, a.mixtures, a.min_weight, a.noise, a.seed)
    train, held = F.split_heldout(table, "largest_n")
    k = a.domains
    print(f"# {k} domains, {a.mixtures} mixtures (min weight {a.min_weight}), fit on {len(train)} points "
          f"(N ≤ 2e8), held out {len(held)} (N = 4e8); noise {a.noise:.2%}; additive {laws.n_params('additive', k)} "
          f"/ joint {laws.n_params('joint', k)} parameters; n_starts={a.n_starts} niter={a.niter}; "
          f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    targets = doms[: a.targets] if a.targets else doms
    targets = targets + ["mean"]
    kw = {"n_starts": a.n_starts, "niter": a.niter, "seed": a.seed}
    rows, times = [], []
    hdr = (f"{'target':>6} | {'add s':>6} {'joint s':>7} {'both s':>6} | {'add train%':>10} {'joint train%':>12} | "
           f"{'add held%':>9} {'joint held%':>11} | {'add Huber':>10} {'joint Huber':>11} {'true Huber':>10} "
           f"{'joint<=add':>10} {'joint<=true':>11}")
    print(hdr)
    for t in targets:
        add = F.fit_law(train, "additive", t, **kw)
        joint = F.fit_law(train, "joint", t, warm_start=add, **kw)
        ta, tj = add.seconds["total"], joint.seconds["total"]
        times.append(ta + tj)
        ok = joint.objective <= add.objective * (1 + 1e-9)
        h_true = F.objective(truth[t], train, t) if t in truth else float("nan")
        r = {"target": t, "additive": add, "joint": joint, "additive_train": add.train_mre,
             "joint_train": joint.train_mre, "additive_heldout": F.evaluate(add, held),
             "joint_heldout": F.evaluate(joint, held)}
        rows.append(r)
        print(f"{t:>6} | {ta:6.1f} {tj:7.1f} {ta + tj:6.1f} | {add.train_mre:10.3f} {joint.train_mre:12.3f} | "
              f"{r['additive_heldout']:9.3f} {r['joint_heldout']:11.3f} | {add.objective:10.3e} "
              f"{joint.objective:11.3e} {h_true:10.3e} {str(ok):>10} "
              f"{'–' if t not in truth else str(joint.objective <= h_true):>11}", flush=True)
    n_ok = sum(r["joint"].objective <= r["additive"].objective * (1 + 1e-9) for r in rows)
    print(f"\nfit time per target (additive + joint): mean {np.mean(times):.1f} s, max {np.max(times):.1f} s "
          f"(target < 60 s); joint ≤ additive on {n_ok}/{len(rows)} targets; load={os.getloadavg()[0]:.2f}\n")
    print(F.mre_table_markdown(rows))
    # h* within the region the runs sampled (every weight ≥ the design's minimum), as mixture-fit does
    bounds = {d: (a.min_weight, 1.0) for d in doms}
    print(f"h* at N=1e9, D=2e10, every weight ≥ {a.min_weight} (fitted joint law vs the true law):")
    for r in rows:
        if r["target"] == "mean":
            continue
        t0 = time.perf_counter()
        o = optimal_mixture(r["joint"], 1e9, 2e10, bounds=bounds)
        dt = time.perf_counter() - t0
        tf = F.FitResult("joint", r["target"], doms, truth[r["target"]], 0, 0, 0, 0, 1e-3, {}, {},
                         {"N0": 1.0, "D0": 1.0}, laws.to_theta(truth[r["target"]]))
        ot = optimal_mixture(tf, 1e9, 2e10, bounds=bounds)
        regret = laws.predict(truth[r["target"]], o.h, 1e9, 2e10)[0] / ot.loss - 1
        print(f"  {r['target']:>4}: {dt:5.2f} s  L1(h*_fit, h*_true) = {np.abs(o.h - ot.h).sum():.3f}  "
              f"true-loss regret {regret:.4%}  predicted gain over uniform {1 - o.loss / o.uniform['loss']:.2%}")


if __name__ == "__main__":
    main()
