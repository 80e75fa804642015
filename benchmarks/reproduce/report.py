"""Tables and plots of the reproduce experiments, from their results JSON files.

Writes ``<out>/tables.md`` (every table docs/results.md quotes) and one PNG per figure. An
experiment whose results file is missing is listed as not run; nothing is made up for it.

    .venv/bin/python benchmarks/reproduce/report.py [--work runs/reproduce] [--out docs/results]
        [--betr runs/reproduce/betr] [--growth runs/reproduce/growth.json] ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EVALS = ("arc", "gsm8k", "hellaswag", "general")


def _load(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else float("nan")


def betr_vs_random(res: dict, out: Path) -> list[str]:
    runs = res["runs"]
    names = ["betr-all", "random", "no-filter", "betr-arc", "betr-gsm8k", "betr-hellaswag"]
    by = {n: [r for r in runs.values() if r["selection"] == n] for n in names}
    md = [f"### Experiment 1: selections ({res['preset']}, {res['train_tokens']:,} training tokens, seeds {res['seeds']})", "",
          "| selection | docs | whitespace tokens | " + " | ".join(f"loss {e}" for e in EVALS)
          + " | ARC-E acc | ARC-C acc | HellaSwag acc_norm |", "|---|---:|---:|" + "---:|" * (len(EVALS) + 3)]
    for n in names:
        rs = by[n]
        if not rs:
            continue
        st = res["selections"].get(n, {})
        loss = {e: _mean([r["loss"][e] for r in rs]) for e in EVALS}
        acc = {t: _mean([r["mc"][t]["acc"] for r in rs]) for t in ("arc_easy", "arc_challenge")}
        hs = _mean([r["mc"]["hellaswag"]["acc_norm"] for r in rs])
        md.append(f"| {n} | {st.get('docs', 0):,} | {st.get('whitespace_tokens', 0):,} | "
                  + " | ".join(f"{loss[e]:.3f}" for e in EVALS)
                  + f" | {acc['arc_easy']:.3f} | {acc['arc_challenge']:.3f} | {hs:.3f} |")
    mc = next(iter(runs.values()))["mc"]
    md += ["", "Chance: " + ", ".join(f"{t} {v['chance']:.3f} (n={v['n']})" for t, v in mc.items())
           + f"; stderr of an accuracy ≈ {max(v['acc_stderr'] for v in mc.values()):.3f}.", ""]

    # the target × eval matrix of the single-benchmark selections
    diag = ["betr-arc", "betr-gsm8k", "betr-hellaswag"]
    evs = ["arc", "gsm8k", "hellaswag"]
    md += ["Target × eval held-out loss (rows: the benchmark a selection targeted; columns: the benchmark "
           "scored; **bold**: the best row of each column):", "",
           "| targeted \\ scored | " + " | ".join(evs) + " |", "|---|" + "---:|" * len(evs)]
    mat = {n: {e: _mean([r["loss"][e] for r in by[n]]) for e in evs} for n in diag if by[n]}
    for n in mat:
        cells = []
        for e in evs:
            v = mat[n][e]
            best = min(mat[m][e] for m in mat)
            cells.append(f"**{v:.3f}**" if v == best else f"{v:.3f}")
        md.append(f"| {n.removeprefix('betr-')} | " + " | ".join(cells) + " |")
    md.append("")

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    sel = [n for n in ("betr-all", "random", "no-filter") if by[n]]
    w = 0.8 / max(1, len(sel))
    for i, n in enumerate(sel):
        ax.bar([j + i * w for j in range(len(EVALS))], [_mean([r["loss"][e] for r in by[n]]) for e in EVALS],
               width=w, label=n)
    ax.set_xticks([j + w * (len(sel) - 1) / 2 for j in range(len(EVALS))], EVALS)
    ax.set_ylabel("held-out loss (nats/token)")
    lo = min(_mean([r["loss"][e] for r in by[n]]) for n in sel for e in EVALS)
    ax.set_ylim(lo - 0.5, None)
    ax.set_title("Experiment 1: BETR vs random vs no filter")
    ax.legend()
    files = [_save(fig, out, "exp1_selection_loss.png")]
    if len(mat) == len(diag):
        fig, ax = plt.subplots(figsize=(4.6, 3.8))
        import numpy as np

        m = np.array([[mat[n][e] for e in evs] for n in diag])
        rel = m - m.min(axis=0, keepdims=True)
        im = ax.imshow(rel, cmap="viridis_r")
        for i in range(len(diag)):
            for j in range(len(evs)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="white" if rel[i, j] > rel.max() / 2 else "black")
        ax.set_xticks(range(len(evs)), evs)
        ax.set_yticks(range(len(diag)), [d.removeprefix("betr-") for d in diag])
        ax.set_xlabel("scored on")
        ax.set_ylabel("targeted")
        ax.set_title("loss above the column's best")
        fig.colorbar(im, ax=ax)
        files.append(_save(fig, out, "exp1_target_eval_matrix.png"))
    return md + [f"![]({f})" for f in files] + [""]


def keep_rate(res: dict, out: Path) -> list[str]:
    runs = res["runs"]
    md = ["### Experiment 2: keep rate at two compute scales", "",
          "| scale | preset | tokens | keep rate | selection (whitespace tokens) | repeated tokens | "
          "benchmark loss (mean of arc, gsm8k, hellaswag) | general loss | FLOPs |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for scale in ("small", "large"):
        rs = sorted((r for r in runs.values() if r["scale"] == scale), key=lambda r: r["keep_rate_pct"])
        for r in rs:
            sel = res["selections"][f"{r['keep_rate_pct']:g}"]
            md.append(f"| {scale} | {r['preset']} | {r['tokens']:,} | {r['keep_rate_pct']:g}% | {sel['whitespace_tokens']:,} | "
                      f"{r['repeated_tokens']:,} | {r['benchmark_loss']:.3f} | {r['loss']['general']:.3f} | {r['flops']:.2e} |")
        if rs:
            base = min(r["benchmark_loss"] for r in rs)
            ax.plot([r["keep_rate_pct"] for r in rs], [r["benchmark_loss"] - base for r in rs], marker="o",
                    label=f"{scale}: {rs[0]['preset']}, {rs[0]['tokens']:,} tokens")
    ax.set_xscale("log")
    ax.set_xticks(res["rates"], [f"{r:g}%" for r in res["rates"]])
    ax.set_xlabel("keep rate (% of pool tokens)")
    ax.set_ylabel("benchmark loss − best at that scale")
    ax.set_title("Experiment 2: keep rate × compute")
    ax.legend()
    md += ["", f"Best keep rate by benchmark loss: {res['best_keep_rate']}.", "",
           f"![]({_save(fig, out, 'exp2_keep_rate.png')})", ""]
    return md


def growth(res: dict, out: Path) -> list[str]:
    by, fx = res["series"]["by-size"], res["series"].get("fixed-lr")
    md = ["### Experiment 3: staged growth vs scratch at equal FLOPs; lr by size vs fixed", "",
          "| stage | preset | cumulative FLOPs | grown, lr by size | from scratch | grown, fixed lr 2e-3 |",
          "|---|---|---:|---:|---:|---:|"]
    fxs = {s["stage"]: s for s in (fx or {}).get("stages", [])}
    for s in by["stages"]:
        f = fxs.get(s["stage"], {}).get("grown_val_loss")
        md.append(f"| {s['stage']} | {s['preset']} | {s['cumulative_flops']:.2e} | {s['grown_val_loss']:.3f} | "
                  f"{s['scratch_val_loss']:.3f} | {f:.3f} |" if f is not None else "| — |")
    p = by["plan"]
    md += ["", f"Series FLOPs {p['series_flops']:.3e} vs {p['separate_flops']:.3e} for training every size "
           f"separately ({100 * p['saving']:.1f}% saved); {p['series_tokens']:,} tokens in the series.", ""]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(by["stages"]):
        c = by["curves"].get(f"stage-{s['stage']}", [])
        ax.plot([q["flops"] for q in c], [q["loss"] for q in c], color=colors[i], label=f"grown {s['preset']}")
        sc = by["curves"].get(f"scratch-{s['stage']}", [])
        if sc:
            ax.plot([q["flops"] for q in sc], [q["loss"] for q in sc], color=colors[i], ls="--", label=f"scratch {s['preset']}")
    if fx:
        for i, s in enumerate(fx["stages"]):
            c = fx["curves"].get(f"stage-{s['stage']}", [])
            ax.plot([q["flops"] for q in c], [q["loss"] for q in c], color=colors[i], ls=":", alpha=0.8,
                    label="fixed lr" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative FLOPs (6·N·D, non-embedding N)")
    ax.set_ylabel("training loss")
    ax.set_title("Experiment 3: the series vs each size from scratch")
    ax.legend(fontsize=7)
    return md + [f"![]({_save(fig, out, 'exp3_growth_loss_vs_flops.png')})", ""]


def upsampling(res: dict, out: Path) -> list[str]:
    runs = res["runs"]
    scheds = list(res["schedules"])
    doms = [*res["target"], *res["general"]]
    md = [f"### Experiment 4: end-of-training upsampling ({res['preset']}, {res['train_tokens']:,} tokens, seeds {res['seeds']})", "",
          "| schedule | " + " | ".join(doms) + " | target mean | general mean |", "|---|" + "---:|" * (len(doms) + 2)]
    means = {}
    for s in scheds:
        rs = [r for r in runs.values() if r["schedule"] == s]
        if not rs:
            continue
        means[s] = {d: _mean([r["loss"][d] for r in rs]) for d in doms}
        t, g = _mean([r["target_loss"] for r in rs]), _mean([r["general_loss"] for r in rs])
        means[s] |= {"target": t, "general": g}
        md.append(f"| {s} | " + " | ".join(f"{means[s][d]:.3f}" for d in doms) + f" | {t:.3f} | {g:.3f} |")
    md += ["", "Per seed (target / general mean loss): " + "; ".join(
        f"{k}: {r['target_loss']:.3f} / {r['general_loss']:.3f}" for k, r in sorted(runs.items())), ""]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for s in means:
        ax.scatter(means[s]["general"], means[s]["target"], s=40, label=s)
        for r in (r for r in runs.values() if r["schedule"] == s):
            ax.scatter(r["general_loss"], r["target_loss"], s=10, alpha=0.5, color=ax.collections[-1].get_facecolor())
    ax.set_xlabel("general loss (wikipedia, science, books)")
    ax.set_ylabel("target loss (math, code, GSM8K)")
    ax.set_title("Experiment 4: upsampling window (big: seed mean)")
    ax.legend()
    return md + [f"![]({_save(fig, out, 'exp4_upsampling.png')})", ""]


def mixture_law(res: dict, out: Path) -> list[str]:
    md = ["### Experiment 5: mixture law", "", "| target | additive train | additive held-out | joint train | joint held-out |",
          "|---|---:|---:|---:|---:|"]
    for t, m in res["mre_pct"].items():
        md.append(f"| {t} | {m['additive_train']:.2f} | {m['additive_heldout']:.2f} | {m['joint_train']:.2f} | {m['joint_heldout']:.2f} |")
    v = res["verify"]
    by: dict[str, list] = {}
    for r in v["runs"]:
        by.setdefault(r["mixture"], []).append(r)
    md += ["", "| mixture | predicted | observed per seed | observed mean |", "|---|---:|---|---:|"]
    for name, rs in by.items():
        md.append(f"| {name} | {rs[0]['predicted']:.3f} | " + " / ".join(f"{r['observed']:.3f}" for r in rs)
                  + f" | {_mean([r['observed'] for r in rs]):.3f} |")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (name, rs) in enumerate(by.items()):
        ax.scatter([i] * len(rs), [r["observed"] for r in rs], label=f"{name} (observed)")
        ax.scatter([i], [rs[0]["predicted"]], marker="x", s=80, color="black")
    ax.set_xticks(range(len(by)), list(by))
    ax.set_ylabel(f"mean held-out loss, {v['preset']} at {v['n_tokens']:,} tokens")
    ax.set_title("Experiment 5: h* vs uniform (x: predicted)")
    return md + ["", f"![]({_save(fig, out, 'exp5_mixture_verify.png')})", ""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/reproduce")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--betr", default=None, help="experiments 1-2's work dir (default <work>/betr)")
    ap.add_argument("--growth", default=None, help="growth.json (default <work>/growth.json)")
    ap.add_argument("--upsampling", default=None, help="upsampling.json (default <work>/upsampling/upsampling.json)")
    ap.add_argument("--mixture", default=None, help="mixture_law.json (default <work>/mixture-law/mixture_law.json)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    betr = a.betr or f"{a.work}/betr"
    sources = {
        "betr_vs_random": (f"{betr}/betr_vs_random.json", betr_vs_random),
        "keep_rate": (f"{betr}/keep_rate.json", keep_rate),
        "growth": (a.growth or f"{a.work}/growth.json", growth),
        "upsampling": (a.upsampling or f"{a.work}/upsampling/upsampling.json", upsampling),
        "mixture_law": (a.mixture or f"{a.work}/mixture-law/mixture_law.json", mixture_law),
    }
    md = ["# Reproduce: generated tables", "", "Written by `benchmarks/reproduce/report.py`; docs/results.md quotes them.", ""]
    for name, (path, fn) in sources.items():
        res = _load(path)
        if res is None:
            md += [f"### {name}: not run ({path} is missing)", ""]
            continue
        md += fn(res, out)
        md += [f"Command: `{res.get('command', '?')}`; finished {res.get('finished', '?')}; machine "
               f"{json.dumps(res.get('machine', {}))}.", ""]
    (out / "tables.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'tables.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
