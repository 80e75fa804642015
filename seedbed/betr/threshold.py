"""BETR step 6: pick score thresholds that keep a fixed percentage of *tokens*.

The keep rate is measured in tokens, not documents (SPEC §1 step 6): long documents count for
what they contribute to a training budget. Tokens are :func:`seedbed.text.count_tokens`
(whitespace tokens), the project-wide unit.

:func:`thresholds_for_keep_rates` is the pure computation. For a keep rate ``p`` it sorts the
docs by score (descending), accumulates tokens, and takes the score ``t`` of the first doc at
which the running total reaches ``p%`` of all tokens: the smallest top-scored prefix holding at
least ``p%`` of the tokens. The filter keeps ``score >= t``.

*Ties*: every doc whose score equals ``t`` is kept (``>=``), so when several docs share the
threshold score the kept share can exceed ``p%`` by those docs' tokens; on real scores (floats
from a softmax) ties are rare and the overshoot is at most one doc's tokens otherwise. The
returned ``docs_kept`` / ``tokens_kept`` are the *actual* counts at ``score >= t``, ties
included, so a report shows exactly what the threshold does on the sample.

:func:`compute_thresholds` scores a deterministic held-out sample of the pool with the trained
classifier and writes ``thresholds.json``. The sample is the project's *bottom-k* sample
(:func:`seedbed.betr.sample.bottom_k`): each doc gets the key ``blake2b(seed, id)`` and the
``sample_size`` smallest keys are kept. That is uniform, reproducible, independent of shard
order and sharding, and needs one streaming pass with ``O(sample_size)`` memory. Use a seed
other than the pool-sample stage's so the two samples are independent, and pass the
classifier's training ids as ``exclude_ids`` so the thresholds come from docs it never saw.
"""

from __future__ import annotations

import hashlib
import math
import time
from numbers import Real
from typing import Iterable, Sequence

import numpy as np

from .. import corpus as _corpus
from .. import store
from ..text import count_tokens
from .classifier import Classifier
from .sample import bottom_k

__all__ = [
    "ThresholdError",
    "thresholds_for_keep_rates",
    "compute_thresholds",
    "rate_key",
    "validate_keep_rates",
]

THRESHOLDS_NAME = "thresholds.json"
SCORE_SAMPLE_MAX = 20_000


class ThresholdError(ValueError):
    """Bad keep rates, scores or sample; the message names the problem."""


def rate_key(p: float) -> str:
    """The JSON key of a keep rate: ``3`` → ``"3"``, ``2.5`` → ``"2.5"``."""
    f = float(p)
    return str(int(f)) if f.is_integer() else repr(f)


def validate_keep_rates(keep_rates: Iterable) -> list:
    """Keep rates as numbers (integral values as int, repeats dropped), each finite and in (0, 100].

    Anything else raises :class:`ThresholdError` naming the bad value.
    """
    if isinstance(keep_rates, (str, bytes)) or not isinstance(keep_rates, Iterable):
        raise ThresholdError(f"keep_rates must be a list of percentages in (0, 100], got {keep_rates!r}")
    rates = list(keep_rates)
    if not rates:
        raise ThresholdError("keep_rates is empty; give at least one percentage in (0, 100]")
    for p in rates:
        if isinstance(p, bool) or not isinstance(p, Real) or not math.isfinite(float(p)) or not 0 < float(p) <= 100:
            raise ThresholdError(
                f"keep rate {p!r} is invalid: keep rates are percentages of tokens in (0, 100]"
            )
    # 3, 3.0 and np.int64(3) all become 3 (KFP delivers list ints as floats): clean JSON keys;
    # repeats (e.g. the filter's keep rate appended to the report's list) are dropped, in order
    out: dict[str, float] = {}
    for p in rates:
        out.setdefault(rate_key(p), int(p) if float(p).is_integer() else float(p))
    return list(out.values())


def thresholds_for_keep_rates(scores: Sequence[float], tokens: Sequence[int], keep_rates: Iterable) -> dict:
    """Score thresholds keeping ~``p``% of the tokens for each keep rate ``p``.

    Returns ``{"keep_rates", "thresholds", "docs_kept", "tokens_kept", "docs_kept_pct",
    "tokens_kept_pct", "sample_docs", "sample_tokens"}``; the per-rate dicts are keyed by
    :func:`rate_key`. See the module docstring for the exact rule and how ties behave.
    """
    rates = validate_keep_rates(keep_rates)
    s = np.asarray(scores, dtype=np.float64).ravel()
    tok = np.asarray(tokens, dtype=np.int64).ravel()
    if s.size == 0:
        raise ThresholdError("no scores: the sample is empty")
    if s.shape != tok.shape:
        raise ThresholdError(f"scores ({s.size}) and tokens ({tok.size}) differ in length")
    if not np.all(np.isfinite(s)):
        raise ThresholdError("scores contain NaN or infinite values")
    if np.any(tok < 0):
        raise ThresholdError("token counts must be non-negative")
    total = int(tok.sum())
    if total <= 0:
        raise ThresholdError("the sample holds no tokens")

    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    cum = np.cumsum(tok[order])
    out = {
        "keep_rates": rates,
        "thresholds": {},
        "docs_kept": {},
        "tokens_kept": {},
        "docs_kept_pct": {},
        "tokens_kept_pct": {},
        "sample_docs": int(s.size),
        "sample_tokens": total,
    }
    for p in rates:
        key = rate_key(p)
        target = float(p) / 100.0 * total
        # first index whose running total reaches the target (tolerate float rounding at 100%)
        i = int(np.searchsorted(cum, target - 1e-9 * total, side="left"))
        i = min(i, s.size - 1)
        t = float(s_sorted[i])
        kept = s >= t
        docs_kept = int(kept.sum())
        tokens_kept = int(tok[kept].sum())
        out["thresholds"][key] = t
        out["docs_kept"][key] = docs_kept
        out["tokens_kept"][key] = tokens_kept
        out["docs_kept_pct"][key] = 100.0 * docs_kept / s.size
        out["tokens_kept_pct"][key] = 100.0 * tokens_kept / total
    return out


# ----------------------------------------------------------------------------- sampling
# The held-out sample is the pool-sample stage's bottom-k (seedbed.betr.sample.bottom_k): one
# sampling rule for the whole project, order- and sharding-independent.


def _corpus_label(c) -> str:
    if isinstance(c, _corpus.Manifest):
        h = hashlib.blake2b("\n".join(s.uri for s in c.shards).encode(), digest_size=8).hexdigest()
        return f"manifest:{len(c.shards)}-shards:{h}"
    return str(c)


def _ids_digest(ids: set | None) -> str | None:
    if not ids:
        return None
    h = hashlib.blake2b(digest_size=12)
    for i in sorted(str(x) for x in ids):
        h.update(i.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def compute_thresholds(
    model_uri: str,
    corpus,
    out_prefix: str,
    keep_rates: Sequence = (3, 10, 30),
    sample_size: int = 100_000,
    seed: int = 1,
    exclude_ids: set | None = None,
    exclude_corpus=None,
    overwrite: bool = False,
    batch_size: int = 4096,
) -> dict:
    """Score a held-out bottom-k sample of the pool and write ``out_prefix/thresholds.json``.

    ``corpus`` is a corpus URI (prefix with ``manifest.json``, a manifest file, a prefix of
    shards or one shard) or a :class:`seedbed.corpus.Manifest`. Idempotent per the stage
    contract; ``params`` records the model, corpus, keep rates, sample size, seed and a digest
    of ``exclude_ids``. ``exclude_corpus`` (a corpus ref, e.g. the classifier's training sample)
    adds that corpus's ids to ``exclude_ids``.
    """
    rates = validate_keep_rates(keep_rates)
    if isinstance(sample_size, float) and sample_size.is_integer():
        sample_size = int(sample_size)  # KFP may deliver ints as floats
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size <= 0:
        raise ThresholdError(f"sample_size must be a positive integer, got {sample_size!r}")
    out_uri = store.join(str(out_prefix), THRESHOLDS_NAME)
    if exclude_corpus is not None:
        exclude_ids = set(exclude_ids or ()) | {r["id"] for r in _corpus.iter_corpus(exclude_corpus)}
    params = {
        "model_uri": str(model_uri),
        "corpus": _corpus_label(corpus),
        "keep_rates": rates,
        "sample_size": sample_size,
        "seed": int(seed),
        "exclude_ids": {"n": len(exclude_ids or ()), "digest": _ids_digest(exclude_ids)},
    }
    done = _corpus.reuse_finished(out_uri, params, overwrite, "thresholds", ThresholdError)
    if done is not None:
        return done

    t0 = time.perf_counter()
    m = corpus if isinstance(corpus, _corpus.Manifest) else _corpus.resolve_corpus(str(corpus))
    read_stats = _corpus.ReadStats()
    bk = bottom_k(_corpus.iter_corpus(m, read_stats), sample_size, int(seed),
                  exclude_ids=exclude_ids, count_all_duplicates=False)
    sample = bk.records
    sampling = {"rule": "bottom-k by blake2b-64(seed, id)", "seen": bk.seen,
                "excluded": bk.excluded, "duplicates_in_sample": bk.duplicates}
    del bk
    if not sample:
        raise ThresholdError(
            f"no usable documents to sample in {_corpus_label(corpus)} "
            f"(read stats {read_stats.as_dict()}, {sampling['excluded']} excluded)"
        )
    t1 = time.perf_counter()
    clf = Classifier.load(str(model_uri))
    texts = [r["text"] for r in sample]
    del sample
    scores = np.concatenate([clf.score(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
    tokens = np.fromiter((count_tokens(t) for t in texts), dtype=np.int64, count=len(texts))
    t2 = time.perf_counter()

    res = thresholds_for_keep_rates(scores, tokens, rates)
    res["score_sample"] = [round(float(x), 6) for x in scores[:SCORE_SAMPLE_MAX]]  # key order: random
    res["score_quantiles"] = {
        str(q): float(np.quantile(scores, q)) for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    }
    res["read_stats"] = read_stats.as_dict()
    res["sampling"] = sampling
    res["seconds"] = {"sample": round(t1 - t0, 3), "score": round(t2 - t1, 3)}
    res["params"] = params
    store.write_json(out_uri, res)
    return res
