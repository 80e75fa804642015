#!/usr/bin/env python
"""Benchmark: the embed stage against a bare ``SentenceTransformer.encode`` on the same docs.

* **bare**: the texts are already in memory as a list; one ``model.encode(texts,
  batch_size, normalize_embeddings=True)`` call (sorting by length, tokenizing, the forward
  passes: the model's own loop and nothing else).
* **stage**: :func:`seedbed.betr.embed.embed_corpus` over the same docs written as a gzip
  corpus: read + decompress + parse the shards, encode, normalise, cast to float16, write
  ``emb-*.npy`` / ``ids-*.json`` and ``manifest.json`` through ``seedbed.store``.

The same loaded model (``--model``, default the packaged all-MiniLM-L6-v2) and the same
truncation (``--max-length``, default 256 tokens) serve both; the model is loaded and warmed
up before timing (loading is a one-time cost per pod). The ratio stage/bare *throughput*
is the cost of everything around the model (target ≥ 0.9×). Runs alternate (bare, stage,
bare, stage, ...) and the best of ``--repeat`` is reported. The stage output is checked
against the bare vectors (float16 tolerance).

Docs: real documents, the first ``--n`` (default 2,000) of
``/work/shared/data/pool/web_pool.jsonl.gz`` (``--data`` for another file, e.g. the tiny pool).

    python benchmarks/bench_embed.py                   # 2,000 docs, max_length 256 (minutes on 2 CPUs)
    python benchmarks/bench_embed.py --quick           # 300 docs, max_length 128
    python benchmarks/bench_embed.py --n 20000 --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from seedbed import corpus as sc  # noqa: E402
from seedbed.betr import embed  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "pool" / "web_pool.jsonl.gz"


def read_docs(path: Path, n: int) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = []
        for line in itertools.islice(f, n):
            r = json.loads(line)
            docs.append({"id": r["id"], "text": r["text"], "source": r.get("source")})
    return docs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="documents")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a .jsonl.gz of real docs")
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--docs-per-shard", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="300 docs, max_length 128")
    ap.add_argument("--workdir", default=None, help="where the corpus and outputs go (default: a temp dir)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.max_length = min(a.n, 300), min(a.max_length, 128)

    docs = read_docs(a.data, a.n)
    texts = [d["text"] for d in docs]
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="bench_embed-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus_uri = str(work / "corpus")
    if (work / "corpus").exists():
        shutil.rmtree(work / "corpus")
    sc.write_corpus(docs, corpus_uri, docs_per_shard=max(1, a.n // 4))  # a few input shards

    model = embed.load_model(a.model, device=a.device, dtype=a.dtype, max_length=a.max_length)
    dev, dt = embed._model_device_dtype(model)
    chars = sum(len(t) for t in texts)
    print(f"bench_embed: {len(docs):,} docs ({chars / len(docs):,.0f} chars avg) from {a.data}")
    print(f"model {embed.model_ref(model)} on {dev} ({dt}), max_length={a.max_length}, "
          f"batch_size={a.batch_size}, threads={embed.available_cpus()}")
    with embed.torch_threads(None):
        model.encode(texts[:16], batch_size=a.batch_size, normalize_embeddings=True)  # warm-up

    t_bare, t_stage = [], []
    ref = None
    out_uri = str(work / "emb")
    for r in range(a.repeat):
        with embed.torch_threads(None):  # the same threads the stage uses
            t0 = time.perf_counter()
            ref = model.encode(texts, batch_size=a.batch_size, normalize_embeddings=True,
                               show_progress_bar=False)
            t_bare.append(time.perf_counter() - t0)
        if (work / "emb").exists():
            shutil.rmtree(work / "emb")
        t0 = time.perf_counter()
        m = embed.embed_corpus(corpus_uri, out_uri, model=model, batch_size=a.batch_size,
                               max_length=a.max_length, docs_per_shard=a.docs_per_shard, progress=False)
        t_stage.append(time.perf_counter() - t0)
        print(f"  run {r + 1}: bare {t_bare[-1]:.2f}s  stage {t_stage[-1]:.2f}s  "
              f"(load avg {os.getloadavg()[0]:.2f})", flush=True)

    ids, X = embed.load_embeddings(m)
    assert ids == [d["id"] for d in docs], "stage ids out of order"
    err = float(np.abs(X.astype(np.float32) - ref).max())
    tb, ts = min(t_bare), min(t_stage)
    print(f"bare encode : {tb:8.2f} s  {len(docs) / tb:8.1f} docs/s")
    print(f"embed stage : {ts:8.2f} s  {len(docs) / ts:8.1f} docs/s  "
          f"(encode {m.meta['runtime']['encode_seconds']:.2f}s of it)")
    print(f"ratio stage/bare throughput: {tb / ts:.3f}x   target >= 0.9x")
    print(f"max |stage - bare| = {err:.2e} (float16 storage)")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if err < 5e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
