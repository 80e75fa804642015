"""Experiment 4: domain upsampling in the last 10–20% of training vs a constant mixture (SPEC §3).

Five real domain corpora (``../shared/data/domains``), a web-heavy base mixture, and one tiny
Llama per schedule, all with the same preset, seed, token budget and lr schedule:

* ``constant``: the base mixture throughout;
* ``upsample-10`` / ``upsample-20``: the base mixture, then for the last 10% / 20% of the
  tokens a mixture that upsamples the small domain-specific sets (math, code) relative to
  web-like text (``TrainConfig.upsample``: the trainer's phase schedule).

Scored on each domain's held-out split (2% of docs by id hash) and on GSM8K text (question +
worked solution, every train example: nothing here targets it). Target-domain loss = math, code
and GSM8K; general loss = Wikipedia, books and science abstracts.

    .venv/bin/python benchmarks/reproduce/upsampling.py [--work runs/reproduce/upsampling]
        [--preset tiny-128] [--tokens 1048576] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

BASE = {"wikipedia": 0.45, "science_abstracts": 0.25, "books_gutenberg": 0.15, "math": 0.10, "code_python": 0.05}
UPSAMPLED = {"wikipedia": 0.20, "science_abstracts": 0.12, "books_gutenberg": 0.08, "math": 0.40, "code_python": 0.20}
TARGET, GENERAL = ("math", "code_python", "gsm8k"), ("wikipedia", "science_abstracts", "books_gutenberg")
SCHEDULES = {"constant": None, "upsample-10": 0.10, "upsample-20": 0.20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/reproduce/upsampling")
    ap.add_argument("--preset", default="tiny-128")
    ap.add_argument("--tokens", type=int, default=1_048_576, help="training tokens per run")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", default=None, help="results JSON (default <work>/upsampling.json)")
    a = ap.parse_args(argv)
    work = str(Path(a.work).resolve())
    seeds = [int(s) for s in a.seeds.split(",")]

    from seedbed.train.tokens import open_tokens, tokenize_domains

    root = C.shared()
    tokens = f"{work}/tokens"
    tokenize_domains({d: str(root / "domains" / f"{d}.jsonl.gz") for d in BASE}, tokens, tokenizer="train",
                     vocab_size=8192, valid_fraction=0.02)
    ds = open_tokens(tokens)
    gsm8k = list(C.corpus.iter_records(str(root / "benchmarks" / "gsm8k_train.jsonl.gz")))
    texts = {**{d: ds.shards(d, "valid") for d in BASE},
             **C.text_arrays(f"{tokens}/tokenizer.json", {"gsm8k": C.benchmark_texts(gsm8k)})}

    runs = {}
    for seed in seeds:
        for name, fraction in SCHEDULES.items():
            run_uri = f"{work}/train/{name}-{a.preset}-s{seed}"
            upsample = {"weights": UPSAMPLED, "fraction": fraction} if fraction else None
            summary = C.train(run_uri, tokens, preset=a.preset, total_tokens=a.tokens, seed=seed, mixture=BASE,
                              upsample=upsample, name=f"{name}-s{seed}")
            ev = C.evaluate(run_uri, texts)
            loss = ev["loss"]
            runs[f"{name}/s{seed}"] = {
                "schedule": name, "fraction": fraction, "seed": seed, "tokens": summary["tokens"],
                "tokens_by_phase": summary.get("tokens_by_phase"), "train_seconds": summary.get("train_seconds"),
                "target_loss": sum(loss[d] for d in TARGET) / len(TARGET),
                "general_loss": sum(loss[d] for d in GENERAL) / len(GENERAL), **ev}

    C.write_results(a.out or f"{work}/upsampling.json", {
        "experiment": "upsampling", "preset": a.preset, "train_tokens": a.tokens, "seeds": seeds, "base": BASE,
        "upsampled": UPSAMPLED, "schedules": SCHEDULES, "target": TARGET, "general": GENERAL,
        "run_settings": C.RUN, "runs": runs,
        "command": "python benchmarks/reproduce/upsampling.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
