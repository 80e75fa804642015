"""Experiment 3: staged growth vs training from scratch at equal FLOPs; learning rate by size vs one fixed lr (SPEC §4).

Two ``staged-growth`` pipeline runs through kfp.local on the five real domain corpora
(tiny-64 → tiny-128 → tiny-256, T_i = 0.5 × non-embedding parameters, zero-extension width and
identity-block depth growth):

* ``by-size``: each stage at its preset's lr (4e-3 / 3e-3 / 2e-3), with ``--baselines``: every
  size also trained from scratch with the FLOPs the series spent up to that stage;
* ``fixed-lr``: every stage at 2e-3 (the largest model's lr).

``docs/evidence-growth.md`` describes the design. Every stage resumes: a rerun retrains nothing.

    .venv/bin/python benchmarks/reproduce/growth.py [--work runs/reproduce]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

RUNS = {"by-size": ["--baselines"], "fixed-lr": ["--lr", "0.002"]}


def curve(run_dir: str, params: float, offset: float = 0.0) -> list[dict]:
    """Training loss vs cumulative FLOPs (6 · non-embedding params · tokens, the plan's accounting) of one
    run, a point every 5 steps; ``offset``: the FLOPs the series spent before it."""
    p = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []
    return [{"flops": offset + 6.0 * params * r["tokens"], "loss": r["loss"]} for r in rows if "loss" in r and r["step"] % 5 == 0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/reproduce", help="the two series go to <work>/growth-by-size and <work>/growth-fixed-lr")
    ap.add_argument("--out", default=None, help="results JSON (default <work>/growth.json)")
    a = ap.parse_args(argv)
    exe = str(Path(sys.executable).with_name("seedbed"))
    out = {}
    for name, extra in RUNS.items():
        w = f"{a.work}/growth-{name}"
        cmd = [exe, "run", "staged-growth", "--work", w, *extra]
        C.log(" ".join(cmd))
        subprocess.run(cmd, check=True, cwd=C.REPO)
        series = json.loads((Path(w) / "report" / "series.json").read_text())
        stages = series["stages"]
        before = [0.0] + [s["cumulative_flops"] for s in stages[:-1]]
        curves = {f"stage-{s['stage']}": curve(f"{w}/stage-{s['stage']}", s["params"], b) for s, b in zip(stages, before)}
        if name == "by-size":
            curves |= {f"scratch-{s['stage']}": curve(f"{w}/scratch-{s['stage']}", s["params"]) for s in stages[1:]}
        out[name] = {"work": w, "stages": stages, "plan": {k: series["plan"][k] for k in
                                                            ("series_flops", "separate_flops", "saving", "series_tokens", "lr_mode")},
                     "curves": curves}
    C.write_results(a.out or f"{a.work}/growth.json", {
        "experiment": "growth", "series": out,
        "command": "python benchmarks/reproduce/growth.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
