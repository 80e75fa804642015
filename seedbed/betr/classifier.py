"""BETR step 5: the fastText quality classifier (train, evaluate, load, score).

Training (:func:`train_classifier`) reads the balanced ``labels.jsonl.gz`` written by the score
stage, splits it into train / held-out deterministically, trains a supervised fastText model
and writes ``model.bin`` and then ``metrics.json`` (the stage's final file) under ``out_prefix``.

Choices and why:

* **One normalizer.** Training lines and scored texts both go through
  :func:`seedbed.text.normalize` (whitespace runs → one space, newlines *replaced*), so the
  classifier sees at inference exactly what it saw in training, and fastText's ``predict``
  never sees ``'\\n'`` (which it rejects).
* **Hyper-parameters** default to the paper's (:data:`DEFAULT_PARAMS`: whitespace tokens,
  wordNgrams 2, lr 0.03, dim 128, minCount 5, epoch 5; ``ws`` has no effect in supervised mode).
  Every fastText training parameter can be overridden; unknown names raise a
  :class:`ClassifierError` listing the valid ones. ``bucket`` keeps fastText's default
  (2M hashed n-gram rows → a model of ~1 GB at dim 128); pass a smaller ``bucket`` for a
  small, cache-resident (faster) model.
* **Threads** come from :func:`seedbed.resources.available_cpus` (affinity + cgroup quota),
  never ``cpu_count()``. fastText training is bit-reproducible only with ``threads=1``
  (Hogwild SGD); with more threads the model varies slightly from run to run.
* **Deterministic split.** Each class is ordered by ``blake2b(seed, id)`` and its first
  ``ceil(heldout_frac * n)`` docs are held out: stratified, independent of file order and of
  the machine.
* **Atomic outputs.** fastText needs real files, so it trains in a temporary directory; the
  model is then streamed to the store with :func:`seedbed.store.open_write` (atomic). With
  ``overwrite`` the old ``metrics.json`` is deleted *first*, so a crash can never pair an old
  ``metrics.json`` with a new ``model.bin``.
* **Scoring.** :class:`Classifier` batches through fastText's list ``predict`` (the loop runs
  in C++). The model is binary softmax, so P(pos) = p when the top label is positive and
  1 − p otherwise: ``k=1`` is enough (cheaper than ``k=2``). fastText reports ``p + 1e-5``
  (it takes ``log(p + 1e-5)``); the offset is removed so both branches are exact. A model
  trained with ``loss="ova"``/``"ns"`` (independent per-label scores) is scored with ``k=2``.
* **One training per fresh process.** This fastText build reads uninitialised memory during
  training (most of the input matrix when ``thread < 10``): a second ``train_supervised`` in
  the same process gave chance-level models or "Encountered NaN". Training therefore runs in
  a fresh ``python -c`` child whose large allocations are zeroed pages (see
  :func:`_train_isolated`), which is upstream fastText's behaviour.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .. import corpus, store
from .. import text as _text  # _text.normalize looked up at call time: one normalizer
from ..resources import available_cpus

__all__ = [
    "DEFAULT_PARAMS",
    "VALID_PARAMS",
    "POS_LABEL",
    "NEG_LABEL",
    "ClassifierError",
    "Classifier",
    "train_classifier",
    "load_labels",
    "split_heldout",
    "binary_metrics",
]

#: The paper's fastText settings (SPEC §1 step 5). Any of them can be overridden.
DEFAULT_PARAMS: dict = dict(wordNgrams=2, lr=0.03, dim=128, minCount=5, epoch=5)

#: Overrides for small label sets (a local run labels a few thousand docs, where DEFAULT_PARAMS,
#: sized for the paper's ~1M labels, stay at chance). Measured on the default local run's 1,600
#: labels: held-out accuracy 0.51 / AUC 0.56 with the defaults, 0.59 / 0.64 with these.
SMALL_SAMPLE_PARAMS = {"lr": 0.2, "epoch": 50, "minCount": 2}

#: fastText supervised-training parameters a caller may set. ``input``, ``label``, ``thread``
#: and ``seed`` are controlled by :func:`train_classifier` itself; autotuning is not supported
#: (it needs its own validation file and would make the run time unbounded).
VALID_PARAMS: tuple[str, ...] = (
    "lr", "dim", "ws", "epoch", "minCount", "minCountLabel", "minn", "maxn", "neg",
    "wordNgrams", "loss", "bucket", "lrUpdateRate", "t", "verbose", "pretrainedVectors",
)

POS_LABEL = "__label__pos"
NEG_LABEL = "__label__neg"
MODEL_NAME = "model.bin"
METRICS_NAME = "metrics.json"
#: fastText's predict returns exp(log(p + 1e-5)) (its ``std_log``), not p
_FT_PROB_OFFSET = 1e-5
#: A class with fewer usable docs than this cannot be trained and evaluated sensibly.
MIN_DOCS_PER_CLASS = 5


class ClassifierError(ValueError):
    """Bad classifier input or parameters; the message names the problem."""


# ----------------------------------------------------------------------------- scoring


class Classifier:
    """A loaded fastText BETR classifier: ``score(texts)`` → P(positive) per text."""

    def __init__(self, model, positive_label: str = POS_LABEL, uri: str | None = None):
        labels = list(model.get_labels())
        if positive_label not in labels or len(labels) != 2:
            raise ClassifierError(
                f"{uri or 'model'} is not a binary BETR classifier: labels {labels}, "
                f"expected two labels including {positive_label!r}"
            )
        self.model = model
        self.uri = uri
        self.positive_label = positive_label
        self._predict = model.f.multilinePredict  # the C++ batch loop, without per-text checks
        # softmax / hierarchical softmax: the two probabilities sum to 1, so k=1 suffices;
        # one-vs-all / negative sampling score each label independently: ask for both (k=2)
        loss = getattr(model.f.getArgs().loss, "name", "softmax")
        self._k = 1 if loss in ("softmax", "hs") else 2

    @classmethod
    def load(cls, model_uri: str, positive_label: str = POS_LABEL) -> "Classifier":
        """Load ``model.bin`` from a local path or ``s3://`` (cached locally by the store)."""
        import fasttext

        path = store.copy_to_local(str(model_uri))
        # Older fastText wheels print a "load_model does not return WordVectorModel..." warning
        # on stderr for every load: keep logs clean.
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                model = fasttext.load_model(str(path))
            except ValueError as e:
                raise ClassifierError(f"cannot load fastText model {model_uri}: {e}") from None
        return cls(model, positive_label, uri=str(model_uri))

    def score_normalized(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) for texts already passed through :func:`seedbed.text.normalize`.

        Callers that need the normalized text anyway (the filter counts tokens on it) use
        this to normalize only once. The texts must not contain ``'\\n'``.
        """
        n = len(texts)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        if any("\n" in t for t in texts):
            # fastText would silently score only the first line of such a text
            raise ClassifierError("score_normalized got a text containing '\\n'; use score() or seedbed.text.normalize")
        lines = [t + "\n" for t in texts]  # fastText reads one line per text
        labels, probs = self._predict(lines, self._k, 0.0, "strict")
        # fastText reports exp(log(p + 1e-5)), i.e. p + 1e-5: undo the offset so that the
        # k=1 trick (1 - p_neg) is exact and continuous at 0.5, then clip to [0, 1]
        eps = _FT_PROB_OFFSET
        out = np.empty(n, dtype=np.float64)
        pos = self.positive_label
        if self._k == 1:
            for i, (lab, p) in enumerate(zip(labels, probs)):
                if len(lab) == 0:  # no prediction at all (cannot happen with a trained EOS token)
                    out[i] = 0.5
                elif lab[0] == pos:
                    out[i] = p[0] - eps
                else:
                    out[i] = 1.0 - (p[0] - eps)
        else:
            for i, (lab, p) in enumerate(zip(labels, probs)):
                d = dict(zip(lab, p))
                out[i] = d[pos] - eps if pos in d else 0.0
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) in [0, 1] for each raw text (normalized here with the shared normalizer)."""
        normalize = _text.normalize
        return self.score_normalized([normalize(t) for t in texts])

    def predict_labels(self, texts: Sequence[str]) -> np.ndarray:
        """1 where P(positive) ≥ 0.5 else 0 (ties go positive)."""
        return (self.score(texts) >= 0.5).astype(np.int8)


# ----------------------------------------------------------------------------- labels


def load_labels(labels_uri: str) -> tuple[list[dict], dict]:
    """Read a labels file (``{"id","text","label": 1|0,...}``); malformed lines are counted.

    A label that is not 0/1 (or true/false) raises: a silently dropped or mis-read label would
    bias the classifier.
    """
    stats = corpus.ReadStats()
    out: list[dict] = []
    with corpus.open_lines(str(labels_uri)) as lines:
        for lineno, line in enumerate(lines, 1):
            rec = corpus.parse_line(line, stats)
            if rec is None:
                continue
            lab = rec.get("label")
            if isinstance(lab, bool):
                lab = int(lab)
            if isinstance(lab, str) or lab not in (0, 1):
                raise ClassifierError(
                    f"{labels_uri} line {lineno} (id {rec.get('id')!r}): label must be 1 or 0, got {rec.get('label')!r}"
                )
            out.append({"id": rec["id"], "text": rec["text"], "label": int(lab)})
    return out, stats.as_dict()


def _split_key(seed: int, doc_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x1f{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()


def split_heldout(docs: list[dict], heldout_frac: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Stratified, seeded, order-independent split → (train, heldout).

    Within each class docs are ordered by ``blake2b(seed, id)`` and the first
    ``ceil(heldout_frac * n_class)`` are held out (at least 1 when ``heldout_frac > 0``),
    leaving at least one training doc per class.
    """
    train: list[dict] = []
    held: list[dict] = []
    for lab in (1, 0):
        cls = sorted((d for d in docs if d["label"] == lab), key=lambda d: (_split_key(seed, d["id"]), d["text"]))
        k = 0
        if heldout_frac > 0 and cls:
            k = min(len(cls) - 1, max(1, math.ceil(heldout_frac * len(cls))))
        held.extend(cls[:k])
        train.extend(cls[k:])
    # interleave deterministically so the training file is not sorted by class (SGD order matters)
    train.sort(key=lambda d: _split_key(seed + 1, d["id"]))
    return train, held


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, cut: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1 of the positive class at ``scores >= cut``, and ROC AUC."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.size == 0:
        return {k: None for k in ("accuracy", "precision", "recall", "f1", "auc")}
    pred = s >= cut
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = None
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos and n_neg:  # Mann-Whitney U with average ranks for ties
        order = np.argsort(s, kind="stable")
        ranks = np.empty(len(s), dtype=np.float64)
        sorted_s = s[order]
        i = 0
        while i < len(s):
            j = i
            while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
                j += 1
            ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
            i = j + 1
        auc = float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    return {
        "accuracy": (tp + tn) / y.size,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auc": auc,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


# ----------------------------------------------------------------------------- training


def _resolve_params(params: dict | None) -> dict:
    params = dict(params or {})
    bad = sorted(k for k in params if k not in VALID_PARAMS)
    if bad:
        hint = ""
        if set(bad) & {"thread", "threads", "seed", "input", "label"}:
            hint = " ('thread'/'seed' are train_classifier arguments; 'input'/'label' are set by it)"
        raise ClassifierError(
            f"unknown fastText parameter(s) {bad}{hint}; valid ones: {', '.join(VALID_PARAMS)}"
        )
    return {**DEFAULT_PARAMS, **params}


def _write_training_file(path: Path, docs: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(POS_LABEL if d["label"] == 1 else NEG_LABEL)
            f.write(" ")
            f.write(_text.normalize(d["text"]))
            f.write("\n")


def _counts(docs: list[dict]) -> dict:
    pos = sum(1 for d in docs if d["label"] == 1)
    return {"pos": pos, "neg": len(docs) - pos}


_TRAIN_CHILD = r"""
import json, sys
import fasttext
a = json.loads(sys.stdin.read())
try:
    fasttext.train_supervised(input=a["input"], **a["kwargs"]).save_model(a["output"])
except Exception as e:
    sys.stderr.write("seedbed-fasttext-error: %s: %s\n" % (type(e).__name__, e))
    sys.exit(3)
"""


def _train_isolated(train_path: str, model_path: str, kwargs: dict) -> None:
    """Train in a fresh Python process whose large allocations are fresh (zeroed) pages.

    Why: fastText 0.9.2 initialises the input matrix in blocks of ``rows*dim/10`` values, one
    block per training thread, so with fewer than 10 threads most of the matrix is never
    written; upstream it is a zero-filled ``std::vector``, but in this wheel
    (fasttext-numpy2-wheel 0.9.2) the memory is left uninitialised. Measured here: with
    ``MALLOC_PERTURB_`` (garbage in fresh allocations) a 1-2 thread model is chance-level
    (0.5 accuracy) while a 10-thread model is fine (0.93); a *second* training in the same
    process reuses freed memory and gives chance-level models or "Encountered NaN". A fresh
    process with ``MALLOC_MMAP_THRESHOLD_=65536`` gets every matrix from a new mmap, i.e.
    zero pages: exactly upstream's behaviour, bit-reproducible with ``thread=1``. The child
    is a plain ``python -c`` (not multiprocessing ``spawn``, which would re-import the caller's
    ``__main__`` and break unguarded scripts and notebooks); a crash there (NaN, OOM) cannot
    take the caller down.
    """
    import json
    import subprocess
    import sys

    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.pop("MALLOC_PERTURB_", None)
    payload = json.dumps({"input": train_path, "output": model_path, "kwargs": kwargs})
    r = subprocess.run(
        [sys.executable, "-c", _TRAIN_CHILD],
        input=payload,
        env=env,
        stdout=None if kwargs.get("verbose") else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if r.returncode != 0 or not Path(model_path).is_file():
        shown = {k: v for k, v in kwargs.items() if k not in ("thread", "seed", "label", "verbose")}
        lines = [ln for ln in (r.stderr or "").strip().splitlines() if ln.strip()]
        err = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("seedbed-fasttext-error:")), None)
        if err is None:
            err = f"the training process exited with code {r.returncode}" + (
                " (killed: out of memory?)" if r.returncode < 0 else ""
            ) + (f": {lines[-1]}" if lines else "")
        hint = " (lower lr?)" if "NaN" in err else ""
        raise ClassifierError(f"fastText training failed with params {shown}: {err}{hint}")
    if kwargs.get("verbose") and r.stderr:
        sys.stderr.write(r.stderr)


def train_classifier(
    labels_uri: str,
    out_prefix: str,
    params: dict | None = None,
    heldout_frac: float = 0.1,
    seed: int = 0,
    threads: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Train the BETR fastText classifier; write ``model.bin`` then ``metrics.json``; return the metrics.

    Idempotent: if ``out_prefix/metrics.json`` exists with the same ``params`` (fastText
    parameters after defaults, ``heldout_frac``, ``seed``, ``labels_uri``) and ``model.bin`` is
    there, it is returned without retraining; with different params a :class:`ClassifierError`
    is raised unless ``overwrite``. ``threads`` is recorded but not part of the params.
    """
    labels_uri, out_prefix = str(labels_uri), str(out_prefix)
    ft_params = _resolve_params(params)
    if not (0.0 <= float(heldout_frac) < 1.0) or math.isnan(float(heldout_frac)):
        raise ClassifierError(f"heldout_frac must be in [0, 1), got {heldout_frac!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ClassifierError(f"threads must be a positive integer or None, got {threads!r}")
    stage_params = {**ft_params, "heldout_frac": float(heldout_frac), "seed": int(seed), "labels_uri": labels_uri}

    model_uri = store.join(out_prefix, MODEL_NAME)
    metrics_uri = store.join(out_prefix, METRICS_NAME)
    done = corpus.reuse_finished(metrics_uri, stage_params, overwrite, "a classifier", ClassifierError)
    if done is not None:
        if store.exists(model_uri):
            return done
        store.delete(metrics_uri)  # model.bin vanished: the old metrics must not describe a new model

    docs, read_stats = load_labels(labels_uri)
    counts = _counts(docs)
    if counts["pos"] == 0 or counts["neg"] == 0:
        raise ClassifierError(
            f"{labels_uri} has {counts['pos']} positive and {counts['neg']} negative docs: "
            "a classifier needs both classes"
        )
    if min(counts.values()) < MIN_DOCS_PER_CLASS:
        raise ClassifierError(
            f"{labels_uri} has too few docs ({counts['pos']} positive, {counts['neg']} negative); "
            f"need at least {MIN_DOCS_PER_CLASS} of each class"
        )
    train, held = split_heldout(docs, float(heldout_frac), int(seed))
    del docs
    n_threads = threads or available_cpus()

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seedbed-ft-") as tmp:
        train_path = Path(tmp) / "train.txt"
        _write_training_file(train_path, train)
        local_model = Path(tmp) / MODEL_NAME
        kwargs = {"verbose": 0, **ft_params, "thread": n_threads, "seed": int(seed), "label": "__label__"}
        _train_isolated(str(train_path), str(local_model), kwargs)
        train_seconds = time.perf_counter() - t0
        model_bytes = local_model.stat().st_size
        clf = Classifier.load(str(local_model))
        clf.uri = model_uri
        with open(local_model, "rb") as src, store.open_write(model_uri) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)

    t1 = time.perf_counter()
    scores = clf.score([d["text"] for d in held])
    eval_seconds = time.perf_counter() - t1
    m = binary_metrics(np.array([d["label"] for d in held], dtype=np.int8), scores)
    metrics = {
        "accuracy": m["accuracy"],
        "precision": m["precision"],
        "recall": m["recall"],
        "f1": m["f1"],
        "auc": m["auc"],
        "confusion": m.get("confusion"),
        "n_train": len(train),
        "n_heldout": len(held),
        "label_counts": {"train": _counts(train), "heldout": _counts(held)},
        "threads": n_threads,
        "vocab_size": len(clf.model.words),
        "model_uri": model_uri,
        "model_bytes": model_bytes,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "read_stats": read_stats,
        "params": stage_params,
    }
    store.write_json(metrics_uri, metrics)
    return metrics
