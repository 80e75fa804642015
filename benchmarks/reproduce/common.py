"""What the reproduce experiments share: the BETR pool and selections, tokenization, training, evaluation.

Every step is a seedbed library stage (the functions the pipelines' components call), so a rerun
reuses what is finished and resumes what is not; nothing here reimplements a method. Experiments
1, 2 and 4 train tiny Llamas (``seedbed.train``) under torchrun on this machine and score them on
held-out benchmark text and zero-shot multiple choice (lm-evaluation-harness, ``seedbed.evaluate``).

Data (``../shared/data``, or ``$SEEDBED_DATA``):

* the **pool** is ``pool/web_pool`` plus every ``domains/*`` corpus (81,436 docs), as in
  ``benchmarks/betr_quality.py``; selections are subsets of it;
* **targets** are evaluation-aware BETR targets (1,000 examples per benchmark, train splits where
  they exist); **evaluation** never scores an example that was a target: ARC on its validation
  splits (the targets come from train), GSM8K and HellaSwag, which have one split each here, on
  the examples of that split that no target set used (disjoint examples of the same split,
  :func:`eval_examples`);
* **general** held-out text is the pool's own held-out split (2% of docs by a hash of the id, the
  same docs in every token dataset, so no selection ever trains on them).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from seedbed import corpus, data, store
from seedbed.betr.sample import sample_key
from seedbed.text import count_tokens

REPO = Path(__file__).resolve().parents[2]
#: the benchmarks whose held-out text every model is scored on (name → benchmark files, eval split)
EVAL_TEXT = {
    "arc": (("arc_easy", "validation"), ("arc_challenge", "validation")),
    "gsm8k": (("gsm8k", "train"),),
    "hellaswag": (("hellaswag", "validation"),),
}
#: BETR target sets (seedbed.betr.targets names): all targeted benchmarks, and each alone
TARGET_SETS = {
    "all": "arc_easy,arc_challenge,gsm8k,hellaswag",
    "arc": "arc_easy,arc_challenge",
    "gsm8k": "gsm8k",
    "hellaswag": "hellaswag",
}
#: zero-shot multiple-choice tasks (seedbed.evaluate.mc), on the eval benchmark folder
MC_TASKS = ("arc_easy", "arc_challenge", "hellaswag")
#: the training settings every tiny run shares (seedbed.train.config.TrainConfig fields)
RUN = {"seq_len": 128, "global_batch_tokens": 4096, "micro_batch_size": 8, "lr_schedule": "cosine",
       "warmup_steps": 10, "checkpoint_every": 50, "eval_tokens": 32_768, "progress": False,
       "device": "cpu"}
SAMPLE_SIZE, PER_BENCHMARK, POSITIVE_PCT, TOP_K, EMBED_MAX_LENGTH = 8_000, 1_000, 10.0, 256, 128
KEEP_RATES = (3.0, 10.0, 30.0)  # % of whitespace tokens; experiment 1 uses 10, experiment 2 all three
EVAL_MAX_TOKENS = 65_536  # held-out tokens scored per benchmark text and for the general split
MC_LIMIT = 1_000  # documents per multiple-choice task


def log(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def shared() -> Path:
    root = data.shared_data_dir()
    if root is None:
        sys.exit("needs ../shared/data (or SEEDBED_DATA): the real pool, domain and benchmark files")
    return root


# ----------------------------------------------------------------------------- BETR selections


def pool_sample(work: str):
    """(pool, sample, sample embeddings): the pool + domains, an 8,000-doc seeded sample, MiniLM at 128 tokens."""
    from seedbed.betr.embed import embed_corpus
    from seedbed.betr.sample import sample_corpus

    root = shared()
    files = [str(root / "pool")] + [str(f) for f in sorted((root / "domains").glob("*.jsonl.gz"))]
    pool = corpus.ingest(files, store.join(work, "pool"), docs_per_shard=10_000)
    sample = sample_corpus(pool, SAMPLE_SIZE, store.join(work, "sample"), seed=0)
    emb = embed_corpus(sample, store.join(work, "emb-sample"), max_length=EMBED_MAX_LENGTH)
    return pool, sample, emb


def classifier(work: str, name: str) -> str:
    """Targets of set ``name`` → embeddings → rank + label the sample → fastText; returns the model URI."""
    from seedbed.betr.classifier import SMALL_SAMPLE_PARAMS, train_classifier
    from seedbed.betr.embed import embed_corpus
    from seedbed.betr.score import score_and_label
    from seedbed.betr.targets import build_targets

    _, sample, emb_sample = pool_sample(work)
    w = store.join(work, "targets", name)
    model = store.join(w, "classifier", "model.bin")
    tg = build_targets(str(shared() / "benchmarks"), store.join(w, "targets"), target_set=TARGET_SETS[name],
                       mode="aware", per_benchmark=PER_BENCHMARK)
    emb_t = embed_corpus(tg, store.join(w, "emb-targets"), max_length=EMBED_MAX_LENGTH)
    score_and_label(emb_t, emb_sample, sample, store.join(w, "score"), top_k=TOP_K, positive_pct=POSITIVE_PCT,
                    target_corpus=tg)
    if not store.exists(store.join(w, "classifier", "metrics.json")):
        train_classifier(store.join(w, "score", "labels.jsonl.gz"), store.join(w, "classifier"),
                         params=SMALL_SAMPLE_PARAMS)
    return model


def betr_selection(work: str, name: str, keep_rates: list[float]) -> dict[float, str]:
    """The pool filtered by target set ``name``'s classifier at each keep rate (% of whitespace tokens): their URIs."""
    from seedbed.betr.filter import filter_corpus
    from seedbed.betr.threshold import compute_thresholds, rate_key

    unknown = sorted(set(keep_rates) - set(KEEP_RATES))
    if unknown:
        raise SystemExit(f"keep rates {unknown} are not among the computed ones {KEEP_RATES}")
    pool, _, _ = pool_sample(work)
    model = classifier(work, name)
    w = store.join(work, "targets", name)
    # every rate's threshold at once, so experiments asking for different rates share one thresholds stage
    thr = compute_thresholds(model, pool, store.join(w, "thresholds"), keep_rates=list(KEEP_RATES),
                             sample_size=SAMPLE_SIZE, seed=1)
    out = {}
    for rate in keep_rates:
        t = thr["thresholds"][rate_key(rate)]
        out[rate] = store.join(w, f"filtered-{rate:g}")
        filter_corpus(model, pool, out[rate], threshold=t, keep_rate=rate)
    return out


def random_selection(work: str, like: str, seed: int = 0) -> str:
    """Pool docs in a seeded random order until they hold as many whitespace tokens as the corpus ``like``; its URI."""
    pool, _, _ = pool_sample(work)
    want = whitespace_tokens(like)
    prefix = store.join(work, f"random-{seed}")
    params = {"seed": seed, "tokens": want, "pool": store.join(work, "pool")}
    done = corpus.reuse_or_clear(prefix, params, overwrite=False, what="a random selection")
    if done is not None:
        return prefix
    order = sorted(((sample_key(seed, r["id"]), count_tokens(r["text"]), r["id"]) for r in corpus.iter_corpus(pool)))
    keep, n = set(), 0
    for _, t, doc_id in order:
        if n >= want:
            break
        keep.add(doc_id)
        n += t
    recs = (r for r in corpus.iter_corpus(pool) if r["id"] in keep)
    corpus.write_corpus(recs, prefix, meta={"stage": "random-selection", "params": params, "tokens": n,
                                            "docs": len(keep)})
    return prefix


def whitespace_tokens(uri: str) -> int:
    return sum(count_tokens(r["text"]) for r in corpus.iter_corpus(uri))


def selection_stats(uri: str) -> dict:
    """Docs, whitespace tokens and docs per pool source of a selection."""
    import collections

    by_source = collections.Counter()
    docs = tokens = 0
    for r in corpus.iter_corpus(uri):
        docs += 1
        tokens += count_tokens(r["text"])
        by_source[r.get("source") or "?"] += 1
    return {"docs": docs, "whitespace_tokens": tokens, "by_source": dict(by_source.most_common())}


# ----------------------------------------------------------------------------- tokens


def pool_tokens(work: str) -> str:
    """The whole pool tokenized with a BPE (8,192) trained on it: the tokenizer every run uses, and the general held-out split."""
    from seedbed.train.tokens import tokenize_domains

    pool, _, _ = pool_sample(work)
    out = store.join(work, "tokens", "pool")
    tokenize_domains({"pool": store.join(work, "pool")}, out, tokenizer="train", vocab_size=8192,
                     valid_fraction=0.02)
    return out


def tokenizer_path(work: str) -> str:
    return store.join(pool_tokens(work), "tokenizer.json")


def tokenize(work: str, name: str, domains: dict[str, str]) -> str:
    """``domains`` (name → corpus URI) as a token dataset with the pool's tokenizer and held-out hash."""
    from seedbed.train.tokens import tokenize_domains

    out = store.join(work, "tokens", name)
    tokenize_domains(domains, out, tokenizer=tokenizer_path(work), valid_fraction=0.02)
    return out


# ----------------------------------------------------------------------------- evaluation data


def _target_ids(work: str) -> set[str]:
    """Benchmark example ids any target set used (target doc ids are ``<benchmark>/<split>/<id>``)."""
    ids = set()
    for name in TARGET_SETS:
        tg = store.join(work, "targets", name, "targets")
        if not store.exists(store.join(tg, "manifest.json")):
            raise SystemExit(f"target set {name!r} is not built yet ({tg}); build every target set first")
        ids |= {r["id"].split("/", 2)[2] for r in corpus.iter_corpus(tg)}
    return ids


def eval_examples(work: str) -> dict[str, list[dict]]:
    """Per EVAL_TEXT name, the benchmark records no target set used (in file order)."""
    used = _target_ids(work)
    root = shared() / "benchmarks"
    out: dict[str, list[dict]] = {}
    for name, files in EVAL_TEXT.items():
        recs = []
        for bench, split in files:
            recs += [r for r in corpus.iter_records(str(root / f"{bench}_{split}.jsonl.gz")) if r["id"] not in used]
        out[name] = recs
    return out


def eval_benchmarks_dir(work: str) -> str:
    """A benchmark folder for the multiple-choice tasks with the target examples taken out."""
    d = Path(work) / "eval-benchmarks"
    if (d / "done.json").exists():
        return str(d)
    d.mkdir(parents=True, exist_ok=True)
    used = _target_ids(work)
    root = shared() / "benchmarks"
    counts = {}
    for bench in MC_TASKS:
        recs = [r for r in corpus.iter_records(str(root / f"{bench}_validation.jsonl.gz")) if r["id"] not in used]
        tmp = d / f".{bench}_validation.jsonl.gz"
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        tmp.replace(d / f"{bench}_validation.jsonl.gz")
        counts[bench] = len(recs)
    (d / "done.json").write_text(json.dumps(counts))
    return str(d)


def text_arrays(tokenizer: str, texts: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
    """Each named list of texts tokenized with ``tokenizer`` (a tokenizer.json) and joined, EOS after each text."""
    from seedbed.train.tokens import find_eos, load_tokenizer

    tok = load_tokenizer(tokenizer)
    _, eos = find_eos(tok)
    out = {}
    for name, items in texts.items():
        ids: list[int] = []
        for enc in tok.encode_batch(items):
            ids += enc.ids + [eos]
        out[name] = [np.asarray(ids, dtype=np.int64)]
    return out


def benchmark_texts(recs: list[dict]) -> list[str]:
    """Benchmark records as BETR target text (question + correct answer, seedbed.betr.targets.format_target)."""
    from seedbed.betr.targets import format_target

    return [format_target(r) for r in recs]


def eval_text_arrays(work: str) -> dict[str, list[np.ndarray]]:
    """Each EVAL_TEXT set's held-out examples, tokenized with the pool's tokenizer."""
    return text_arrays(tokenizer_path(work), {k: benchmark_texts(v) for k, v in eval_examples(work).items()})


# ----------------------------------------------------------------------------- train + evaluate


def train(run_uri: str, tokens_uri: str, **settings) -> dict:
    """One training run (``seedbed.train`` under torchrun, 1 process); returns its summary.json."""
    from seedbed.launch.local import run_torchrun_local
    from seedbed.train.config import write_run_config

    summary = store.join(run_uri, "summary.json")
    if not store.exists(summary):
        cfg = write_run_config(tokens_uri, run_uri, {**RUN, **settings})
        log(f"train {run_uri} ({settings.get('preset')}, {settings.get('total_tokens'):,} tokens)")
        t0 = time.time()
        run_torchrun_local(["--config", cfg], log=lambda line: None, log_dir=store.join(run_uri, "logs"))
        log(f"trained {run_uri} in {time.time() - t0:.0f}s")
    return store.read_json(summary)


def evaluate(run_uri: str, texts: dict[str, list[np.ndarray]], mc_benchmarks: str | None = None,
             tag: str = "") -> dict:
    """Held-out loss of a finished run on each token array set; zero-shot MC accuracy on ``mc_benchmarks``.

    Cached in ``<run>/reproduce-eval.json`` under a key of the run's fingerprint, the texts and the
    settings, so a rerun scores again only what changed.
    """
    from seedbed.evaluate.lm import heldout_loss, load_model
    from seedbed.evaluate.mc import evaluate_mc

    out_uri = store.join(run_uri, "reproduce-eval.json")
    h = hashlib.sha256()
    for name in sorted(texts):
        h.update(name.encode())
        for a in texts[name]:
            h.update(np.ascontiguousarray(a[:EVAL_MAX_TOKENS + 1]).tobytes())
    fingerprint = store.read_json(store.join(run_uri, "summary.json")).get("fingerprint")
    key = hashlib.sha256(json.dumps([h.hexdigest(), EVAL_MAX_TOKENS, MC_LIMIT, bool(mc_benchmarks), list(MC_TASKS),
                                     fingerprint, tag]).encode()).hexdigest()[:16]
    if store.exists(out_uri) and store.read_json(out_uri).get("key") == key:
        return store.read_json(out_uri)
    t0 = time.time()
    model, tokenizer = load_model(store.join(run_uri, "model"), device="cpu")
    res = heldout_loss(model, texts, RUN["seq_len"], max_tokens=EVAL_MAX_TOKENS)
    result = {"key": key, "loss": {k: v["loss"] for k, v in res.items() if k != "all"},
              "tokens": {k: v["tokens"] for k, v in res.items() if k != "all"}}
    if mc_benchmarks:
        acc = evaluate_mc(model, tokenizer, MC_TASKS, benchmarks=mc_benchmarks, limit=MC_LIMIT)
        result["mc"] = {t: {k: acc[t][k] for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n", "chance")}
                        for t in MC_TASKS}
    result["seconds"] = round(time.time() - t0, 1)
    store.write_json(out_uri, result)
    log(f"evaluated {run_uri} in {result['seconds']}s: " + json.dumps({k: round(v, 3) for k, v in result["loss"].items()}))
    return result


def betr_eval_texts(work: str) -> dict[str, list[np.ndarray]]:
    """What experiments 1 and 2 score: each benchmark's held-out text, and the pool's held-out split."""
    from seedbed.train.tokens import open_tokens

    return {**eval_text_arrays(work), "general": open_tokens(pool_tokens(work)).shards("pool", "valid")}


def machine() -> dict:
    import platform

    import torch

    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def write_results(path: str, results: dict) -> None:
    results = {**results, "machine": machine(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.write_json(path, results)
    log(f"results in {path}")
