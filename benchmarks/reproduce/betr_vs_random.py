"""Experiment 1: BETR vs random selection vs no filter, and targeting one benchmark at a time.

Selections of the real pool (``pool/web_pool`` + ``domains/*``, 81,436 docs), each at the same
keep rate (10% of whitespace tokens) except "no filter":

* ``betr-all``: BETR targeted at ARC-Easy + ARC-Challenge + GSM8K + HellaSwag together;
* ``random``: seeded random docs holding as many whitespace tokens as ``betr-all``;
* ``no-filter``: the whole pool;
* ``betr-arc`` / ``betr-gsm8k`` / ``betr-hellaswag``: BETR targeted at one benchmark alone.

One tiny Llama per selection (same preset, seed, token budget, tokenizer and schedule) is scored
on the held-out text of each benchmark (examples no target set used), on the pool's held-out
split, and zero-shot on ARC-E / ARC-C / HellaSwag. The target × eval loss matrix of the three
single-benchmark selections is the "diagonal" test: each selection should be best on its own
benchmark.

    .venv/bin/python benchmarks/reproduce/betr_vs_random.py [--work runs/reproduce/betr]
        [--preset tiny-128] [--tokens 1048576] [--seeds 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

KEEP_RATE = 10.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/reproduce/betr")
    ap.add_argument("--preset", default="tiny-128")
    ap.add_argument("--tokens", type=int, default=1_048_576, help="training tokens per run")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds (one run per selection and seed)")
    ap.add_argument("--out", default=None, help="results JSON (default <work>/betr_vs_random.json)")
    a = ap.parse_args(argv)
    work = str(Path(a.work).resolve())
    seeds = [int(s) for s in a.seeds.split(",")]

    # selections (each a library stage: reruns reuse them)
    sel = {f"betr-{name}": C.betr_selection(work, name, [KEEP_RATE])[KEEP_RATE] for name in C.TARGET_SETS}
    sel["random"] = C.random_selection(work, sel["betr-all"], seed=0)
    sel["no-filter"] = f"{work}/pool"
    stats = {name: C.selection_stats(uri) for name, uri in sel.items()}
    tokens = {name: C.tokenize(work, name, {"sel": uri}) for name, uri in sel.items() if name != "no-filter"}
    tokens["no-filter"] = C.pool_tokens(work)
    domain = {name: "sel" for name in tokens} | {"no-filter": "pool"}

    texts = C.betr_eval_texts(work)
    mc_dir = C.eval_benchmarks_dir(work)
    runs = {}
    for seed in seeds:
        for name in ["betr-all", "random", "no-filter", "betr-arc", "betr-gsm8k", "betr-hellaswag"]:
            run_uri = f"{work}/train/{name}-{a.preset}-s{seed}"
            summary = C.train(run_uri, tokens[name], preset=a.preset, total_tokens=a.tokens, seed=seed,
                              mixture={domain[name]: 1.0}, name=f"{name}-s{seed}")
            ev = C.evaluate(run_uri, texts, mc_dir)
            runs[f"{name}/s{seed}"] = {"selection": name, "seed": seed, "preset": a.preset, "tokens": summary["tokens"],
                                       "flops": summary["flops"], "repeated_tokens": summary.get("repeated_tokens"),
                                       "train_seconds": summary.get("train_seconds"), **ev}

    C.write_results(a.out or f"{work}/betr_vs_random.json", {
        "experiment": "betr_vs_random", "keep_rate_pct": KEEP_RATE, "preset": a.preset, "train_tokens": a.tokens,
        "seeds": seeds, "selections": stats, "run_settings": C.RUN, "eval_sets": list(texts),
        "mc_tasks": list(C.MC_TASKS), "runs": runs,
        "command": "python benchmarks/reproduce/betr_vs_random.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
