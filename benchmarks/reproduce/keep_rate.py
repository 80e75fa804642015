"""Experiment 2: BETR keep rate 3% / 10% / 30% at two compute scales (SPEC §1: the best keep rate grows with compute).

The BETR classifier targeted at ARC-E + ARC-C + GSM8K + HellaSwag (experiment 1's ``betr-all``)
filters the pool at three keep rates (% of whitespace tokens). Each selection trains a small
model on few tokens and a larger model on more tokens (the two compute scales); every model is
scored on the targeted benchmarks' held-out text (their mean is the "benchmark loss") and on the
pool's held-out split. A small selection repeats its data when the token budget exceeds it: the
runs record how many tokens were repeats.

    .venv/bin/python benchmarks/reproduce/keep_rate.py [--work runs/reproduce/betr]
        [--small tiny-64:524288] [--large tiny-128:2097152] [--rates 3,10,30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

BENCHMARKS = tuple(C.EVAL_TEXT)


def _scale(text: str) -> tuple[str, int]:
    preset, _, tokens = text.partition(":")
    if not preset or not tokens.isdigit():
        raise SystemExit(f"a scale is PRESET:TOKENS (e.g. tiny-128:2097152), got {text!r}")
    return preset, int(tokens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/reproduce/betr", help="experiment 1's work dir (shares its pool and classifier)")
    ap.add_argument("--small", default="tiny-64:524288", help="PRESET:TOKENS of the small-compute runs")
    ap.add_argument("--large", default="tiny-128:2097152", help="PRESET:TOKENS of the large-compute runs")
    ap.add_argument("--rates", default="3,10,30", help="keep rates, %% of whitespace tokens")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="results JSON (default <work>/keep_rate.json)")
    a = ap.parse_args(argv)
    work = str(Path(a.work).resolve())
    rates = [float(r) for r in a.rates.split(",")]
    scales = {"small": _scale(a.small), "large": _scale(a.large)}

    sel = C.betr_selection(work, "all", rates)
    stats = {f"{r:g}": C.selection_stats(uri) for r, uri in sel.items()}
    tokens = {r: C.tokenize(work, f"keep-{r:g}", {"sel": uri}) for r, uri in sel.items()}
    texts = C.betr_eval_texts(work)

    runs = {}
    for scale, (preset, n) in scales.items():
        for r in rates:
            run_uri = f"{work}/train/keep-{r:g}-{preset}-{n}-s{a.seed}"
            summary = C.train(run_uri, tokens[r], preset=preset, total_tokens=n, seed=a.seed, mixture={"sel": 1.0},
                              name=f"keep-{r:g}-{scale}")
            ev = C.evaluate(run_uri, texts)
            runs[f"{scale}/{r:g}"] = {
                "scale": scale, "keep_rate_pct": r, "preset": preset, "tokens": summary["tokens"],
                "flops": summary["flops"], "repeated_tokens": sum((summary.get("repeated_tokens") or {}).values()),
                "train_seconds": summary.get("train_seconds"),
                "benchmark_loss": sum(ev["loss"][b] for b in BENCHMARKS) / len(BENCHMARKS), **ev}

    best = {s: min((v for v in runs.values() if v["scale"] == s), key=lambda v: v["benchmark_loss"])["keep_rate_pct"]
            for s in scales}
    C.write_results(a.out or f"{work}/keep_rate.json", {
        "experiment": "keep_rate", "scales": {k: {"preset": p, "tokens": n} for k, (p, n) in scales.items()},
        "rates": rates, "seed": a.seed, "selections": stats, "best_keep_rate": best, "run_settings": C.RUN,
        "runs": runs,
        "command": "python benchmarks/reproduce/keep_rate.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
