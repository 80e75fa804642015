"""BETR selection quality on the real ../shared/data pool + domain corpora.

Targets science benchmarks (ARC-E, ARC-C, OpenBookQA) and GSM8K in turn and reports, per
domain, the share of (a) the pool, (b) the embedding-labelled top X% of the sample, and
(c) the classifier-filtered pool at a 10% token keep rate. Targeting science should pull
science abstracts far above their base rate, targeting GSM8K should pull math.

    .venv/bin/python benchmarks/betr_quality.py --work runs/quality            # ≈10 min on 2 cores
    .venv/bin/python benchmarks/betr_quality.py --work runs/quality-q --sample-size 5000 --quick

The pool sample and its embeddings are computed once and shared by both target sets; every
stage is the library function the pipeline runs, so reruns resume.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from seedbed import corpus, data, store
from seedbed.betr.classifier import SMALL_SAMPLE_PARAMS, train_classifier
from seedbed.betr.embed import embed_corpus
from seedbed.betr.filter import filter_corpus
from seedbed.betr.sample import sample_corpus
from seedbed.betr.score import score_and_label
from seedbed.betr.targets import build_targets
from seedbed.betr.threshold import compute_thresholds

TARGET_SETS = {"science": "arc_easy,arc_challenge,openbookqa", "gsm8k": "gsm8k"}


def domain_of(sources: dict[str, str]):
    """source value → domain (the domains/ file it came from, or 'web:<source>' for the pool)."""

    def f(rec: dict) -> str:
        return sources.get(rec.get("source", ""), "web:" + str(rec.get("source")))

    return f


def shares(recs, key) -> dict[str, float]:
    c = collections.Counter(key(r) for r in recs)
    n = max(1, sum(c.values()))
    return {k: v / n for k, v in c.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/quality")
    ap.add_argument("--sample-size", type=int, default=8_000)
    ap.add_argument("--per-benchmark", type=int, default=1000)
    ap.add_argument("--positive-pct", type=float, default=10.0)
    ap.add_argument("--keep-rate", type=float, default=10.0)
    ap.add_argument("--top-k", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="skip the classifier + filter part")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)

    root = data.shared_data_dir()
    if root is None:
        print("needs ../shared/data (or SEEDBED_DATA)", file=sys.stderr)
        return 2
    work = str(Path(a.work).resolve())
    domain_files = sorted((root / "domains").glob("*.jsonl.gz"))
    sources: dict[str, str] = {}
    for f in domain_files:
        for rec in corpus.iter_records(str(f)):
            sources.setdefault(rec.get("source", ""), f.name.split(".")[0])
    dom = domain_of(sources)

    t0 = time.time()
    pool = corpus.ingest([str(root / "pool")] + [str(f) for f in domain_files], store.join(work, "pool"),
                         docs_per_shard=10_000)
    pool_share = shares(corpus.iter_corpus(pool), dom)
    sample = sample_corpus(pool, a.sample_size, store.join(work, "sample"), seed=0)
    emb_sample = embed_corpus(sample, store.join(work, "emb-sample"), max_length=a.max_length)
    print(f"pool {pool.docs} docs, sample {sample.docs}, embedded in {time.time() - t0:.0f}s", file=sys.stderr)

    results = {"pool_docs": pool.docs, "sample_docs": sample.docs, "pool_share": pool_share, "targets": {}}
    for name, tset in TARGET_SETS.items():
        w = store.join(work, name)
        tg = build_targets(str(root / "benchmarks"), store.join(w, "targets"), target_set=tset, mode="aware",
                           per_benchmark=a.per_benchmark)
        emb_t = embed_corpus(tg, store.join(w, "emb-targets"), max_length=a.max_length)
        score_and_label(emb_t, emb_sample, sample, store.join(w, "score"), top_k=a.top_k,
                        positive_pct=a.positive_pct, target_corpus=tg)
        labelled = list(corpus.iter_records(store.join(w, "score", "labels.jsonl.gz")))
        top = [r for r in labelled if r["label"] == 1]
        res = {"targets": tg.docs, "top_pct_share": shares(top, dom), "n_top": len(top)}
        if not a.quick:
            metrics = train_classifier(store.join(w, "score", "labels.jsonl.gz"), store.join(w, "classifier"),
                                       params=SMALL_SAMPLE_PARAMS)
            model = store.join(w, "classifier", "model.bin")
            thr = compute_thresholds(model, pool, store.join(w, "thresholds"), keep_rates=[a.keep_rate],
                                     sample_size=a.sample_size, seed=1)
            t = thr["thresholds"][next(iter(thr["thresholds"]))]
            m = filter_corpus(model, pool, store.join(w, "filtered"), threshold=t, keep_rate=a.keep_rate)
            res.update(classifier={k: metrics.get(k) for k in ("accuracy", "precision", "recall", "f1")},
                       threshold=t, kept_docs=m.docs, filtered_share=shares(corpus.iter_corpus(m), dom))
        results["targets"][name] = res

    doms = sorted(pool_share, key=lambda d: -pool_share[d])
    for name, res in results["targets"].items():
        print(f"\n### targets: {name} ({TARGET_SETS[name]}, {res['targets']} examples)")
        print(f"| domain | pool share | top {a.positive_pct:g}% of sample (embeddings) |"
              + (f" filtered pool at {a.keep_rate:g}% tokens (fastText) |" if "filtered_share" in res else ""))
        print("|---|---:|---:|" + ("---:|" if "filtered_share" in res else ""))
        for d in doms:
            row = f"| {d} | {100 * pool_share[d]:.1f}% | {100 * res['top_pct_share'].get(d, 0):.1f}% |"
            if "filtered_share" in res:
                row += f" {100 * res['filtered_share'].get(d, 0):.1f}% |"
            print(row)
        if "classifier" in res:
            print(f"classifier held-out: {json.dumps(res['classifier'])}; kept {res['kept_docs']} docs")
    print(f"\ntotal {time.time() - t0:.0f}s", file=sys.stderr)
    if a.out:
        store.write_json(a.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
