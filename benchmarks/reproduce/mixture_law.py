"""Experiment 5: the mixture law (SPEC §2): train and held-out MRE on a real sweep; fitted h* vs uniform when trained.

Runs the ``mixture-fit`` pipeline through kfp.local on four real domains (``docs/evidence-mixture.md``
explains the design), refits both laws for every target with the held-out column, and trains
h*, the uniform and the natural mixture at h*'s (N, D) over several seeds. Every step resumes: a
rerun with the same ``--work`` retrains nothing.

    .venv/bin/python benchmarks/reproduce/mixture_law.py [--work runs/reproduce/mixture-law] [--seeds 0,1,2,3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

DOMAINS = "books_gutenberg,code_python,math,wikipedia"
TARGETS = "mean," + DOMAINS


def seedbed(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("seedbed")), *args]
    C.log(" ".join(cmd))
    subprocess.run(cmd, check=True, cwd=C.REPO)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/reproduce/mixture-law")
    ap.add_argument("--seeds", default="0,1,2,3", help="seeds of the h* vs uniform comparison")
    ap.add_argument("--out", default=None, help="results JSON (default <work>/mixture_law.json)")
    a = ap.parse_args(argv)
    work = a.work
    seeds = [int(s) for s in a.seeds.split(",")]

    seedbed("run", "mixture-fit", "--work", work, "--sweep-domains", DOMAINS, "--presets", "tiny-64,tiny-128",
            "--tokens", "300000,300000", "--heldout-presets", "tiny-256", "--heldout-tokens", "300000",
            "--eval-points", "5", "--optimize-preset", "tiny-256", "--optimize-tokens", "300000",
            "--set", "eval_tokens=32768", "--set", "checkpoint_every=0", "--verify-seeds", "0,1")
    seedbed("fit-mixture", f"{work}/results/results.csv", "--out", f"{work}/fit-all", "--targets", TARGETS,
            "--heldout", "column")

    from seedbed import store
    from seedbed.mixture.stages import verify_stage

    natural = {s: store.read_json(f"{work}/verify/natural-s{s}/summary.json") for s in (0, 1)
               if store.exists(f"{work}/verify/natural-s{s}/summary.json")}
    verify = verify_stage(work, seeds, mixtures=["optimal", "uniform"])
    fits = store.read_json(f"{work}/fit-all/fit/fits.json")
    mre = {f["target"]: {k: f[k] for k in ("additive_train", "additive_heldout", "joint_train", "joint_heldout")}
           for f in fits}
    C.write_results(a.out or f"{work}/mixture_law.json", {
        "experiment": "mixture_law", "domains": DOMAINS.split(","), "mre_pct": mre,
        "mixture": store.read_json(f"{work}/mixture.json"), "verify": verify,
        "natural_val_loss": {s: v["val_loss"] for s, v in natural.items()},
        "command": "python benchmarks/reproduce/mixture_law.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
