"""BETR step 7: score the full pool shard by shard and keep the docs above the threshold.

Unit of work = one input shard (:func:`filter_shard`), so a KFP pipeline can ``ParallelFor``
over :func:`plan_filter`'s shard list and a failed or pre-empted pod only redoes its shard.
:func:`merge_filter_outputs` then builds the output corpus manifest from the per-shard stats;
:func:`filter_corpus` is the same flow as one local call (sequential or a process pool).

Layout under ``out_prefix`` (names derived from the input, see :func:`output_name`)::

    <stem>-<hash8>.jsonl.gz          kept docs: the original record + "betr_score"
    _stats/<stem>-<hash8>.json       per-shard stats: the shard's done-marker, written LAST
    manifest.json                    the output corpus (written last by the merge)

``<stem>`` is the input shard's file name without its ``.jsonl[.gz|.zst]`` suffix (``part-00003``)
and ``<hash8>`` 8 hex digits of ``blake2b`` of the input's full URI (absolute path for local
files), so two inputs called ``part-00000`` in different prefixes never collide and a rerun
maps each input to the same output.

**Crash safety / resumability.** The output shard is written with
:class:`seedbed.corpus.ShardWriter` (a hidden temp file renamed on success locally, one
(multipart) upload on S3 that is invisible until complete), and the stats marker only after
the shard is complete. A shard killed midway therefore leaves at most hidden temp files or an
incomplete multipart upload, never a marker; a rerun redoes it. A rerun whose marker exists
with the same params returns the stored stats without reading anything; different params
raise :class:`FilterError` unless ``overwrite``. Only markers define what is finished: the
manifest is built from them, never from a directory listing.

**Empty outputs.** By default (``write_empty=True``) every input shard gets an output shard,
even when no doc passes (a valid, empty ``.jsonl.gz``): one output per input is easy to audit,
and the manifest lists it with ``docs: 0``. With ``write_empty=False`` no file is written
for such a shard, its stats say ``"output_shard": null`` and the manifest leaves it out. Either
way the manifest lists exactly the output shards that exist, with their true doc counts.

**Malformed input lines** (bad JSON, invalid UTF-8, no ``text``, empty ``text``) are parsed with
:func:`seedbed.corpus.parse_line`: they are counted in the stats and never crash the shard.
A truncated/corrupt compressed file does raise (:class:`seedbed.corpus.CorpusError`): silently
keeping half a shard would look like a finished one.

**Speed.** The hot loop does per line only what must be per line (``orjson`` parse, the shared
:func:`seedbed.text.normalize`, a token count); scoring is one fastText ``predict`` call per
batch (the loop runs in C++), keep decisions and token sums are numpy operations on the batch,
per-source counts use ``collections.Counter`` (C), and kept records are written through a
gzip stream at a low level (``compresslevel``, default 1: on pool text level 1 compresses
~1.7× faster than level 3 for ~7% more bytes, and level 6 is another 2.5× slower for ~7%
fewer; the filter runs over the whole pool, its output is a fraction of it). Tokens are counted on the
normalized text as ``text.count(" ") + 1``, which equals :func:`seedbed.text.count_tokens` on
the raw text because normalization leaves exactly one space between whitespace tokens (a test
checks this on real docs); it avoids a second split of every document.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from itertools import compress
from typing import Iterator, Sequence

import numpy as np

from .. import corpus as _corpus
from .. import store
from .. import text as _text  # text.normalize looked up at call time: one normalizer
from .classifier import Classifier

__all__ = [
    "FilterError",
    "STATS_DIR",
    "output_name",
    "filter_shard",
    "plan_filter",
    "merge_filter_outputs",
    "filter_corpus",
    "threshold_from_file",
]

STATS_DIR = "_stats"
OUTPUT_SUFFIX = ".jsonl.gz"
SCORE_FIELD = "betr_score"
_COUNT_KEYS = ("docs_in", "docs_kept", "tokens_in", "tokens_kept", "bad_json", "bad_utf8", "no_text", "empty_text", "malformed")


class FilterError(ValueError):
    """Bad filter input or an inconsistent output prefix; the message names the problem."""


# ----------------------------------------------------------------------------- naming


def _canonical(uri: str) -> str:
    uri = str(uri)
    if store.is_s3(uri):
        return uri
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return os.path.abspath(uri)


def output_name(shard_uri: str) -> str:
    """``<input stem>-<8 hex of blake2b(full input URI)>``: deterministic and unique per input."""
    base = store.basename(str(shard_uri))
    stem = base
    for suf in sorted(_corpus.SHARD_SUFFIXES, key=len, reverse=True):
        if base.endswith(suf):
            stem = base[: -len(suf)]
            break
    h = hashlib.blake2b(_canonical(shard_uri).encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{stem}-{h}"


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool):
        raise FilterError(f"threshold must be a number, got {threshold!r}")
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise FilterError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(t):
        raise FilterError(f"threshold must be finite, got {threshold!r}")
    return t


def threshold_from_file(thresholds_uri: str, keep_rate) -> float:
    """The threshold for ``keep_rate`` from a ``thresholds.json`` written by compute_thresholds."""
    from .threshold import rate_key

    uri = str(thresholds_uri)
    if not uri.endswith(".json"):
        uri = store.join(uri, "thresholds.json")
    th = store.read_json(uri).get("thresholds", {})
    key = rate_key(keep_rate)
    if key not in th:
        raise FilterError(f"{uri} has no threshold for keep rate {keep_rate!r}; it has {sorted(th)}")
    return float(th[key])


# ----------------------------------------------------------------------------- one shard

_CLF_CACHE: dict[tuple, Classifier] = {}


def _classifier(model_uri: str) -> Classifier:
    """One loaded model per process (a local driver filters many shards with the same model)."""
    local = store.copy_to_local(str(model_uri))
    st = local.stat()
    key = (str(model_uri), str(local), st.st_size, st.st_mtime_ns)
    clf = _CLF_CACHE.get(key)
    if clf is None:
        _CLF_CACHE.clear()  # models can be GBs: keep one
        clf = _CLF_CACHE[key] = Classifier.load(str(model_uri))
    return clf


def _batches(shard_uri: str, stats: _corpus.ReadStats, batch_size: int) -> Iterator[list[dict]]:
    """Well-formed records of a shard in lists of ``batch_size``; malformed lines counted.

    A generator, so the caller's own errors (e.g. writing the output) are not raised inside
    ``open_lines``'s block (which would report them as decompression errors of the input).
    """
    parse = _corpus.parse_line
    with _corpus.open_lines(shard_uri) as lines:
        batch: list[dict] = []
        append = batch.append
        for line in lines:
            rec = parse(line, stats)
            if rec is not None:
                append(rec)
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
                    append = batch.append
        if batch:
            yield batch


def _source(rec: dict) -> str:
    s = rec.get("source")
    return "unknown" if s is None else str(s)


def filter_shard(
    model_uri: str,
    shard_uri: str,
    out_prefix: str,
    threshold: float,
    keep_rate=None,
    batch_size: int = 4096,
    overwrite: bool = False,
    compresslevel: int = 1,
    write_empty: bool = True,
) -> dict:
    """Filter one input shard: keep docs with ``score >= threshold``; return the shard's stats.

    Writes ``out_prefix/<name>.jsonl.gz`` (kept records + ``betr_score``) and then
    ``out_prefix/_stats/<name>.json`` (the done-marker), ``name = output_name(shard_uri)``.
    ``keep_rate`` is informational (recorded in stats and the manifest). ``params`` — model,
    input, threshold, keep_rate, write_empty — decide whether an existing marker is reused.
    """
    model_uri, shard_uri, out_prefix = str(model_uri), str(shard_uri), str(out_prefix)
    t = _check_threshold(threshold)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise FilterError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(compresslevel, bool) or not isinstance(compresslevel, int) or not 1 <= compresslevel <= 9:
        raise FilterError(f"compresslevel must be an integer in 1..9, got {compresslevel!r}")
    if not shard_uri.endswith(_corpus.SHARD_SUFFIXES):
        raise FilterError(f"input {shard_uri} is not a shard (*.jsonl, *.jsonl.gz, *.jsonl.zst)")
    name = output_name(shard_uri)
    out_uri = store.join(out_prefix, name + OUTPUT_SUFFIX)
    stats_uri = store.join(out_prefix, STATS_DIR, name + ".json")
    params = {
        "model_uri": model_uri,
        "input_shard": shard_uri,
        "threshold": t,
        "keep_rate": keep_rate,
        "write_empty": bool(write_empty),
    }
    # with overwrite the marker goes first: from then on the shard is unfinished
    done = _corpus.reuse_finished(stats_uri, params, overwrite, "a filtered shard", FilterError)
    if done is not None:
        return done

    t0 = time.perf_counter()
    clf = _classifier(model_uri)
    rs = _corpus.ReadStats()
    src_in: Counter = Counter()
    src_kept: Counter = Counter()
    tokens_in = tokens_kept = docs_kept = 0
    writer: _corpus.ShardWriter | None = None

    with contextlib.ExitStack() as stack:
        # entered first, so it closes last: a failing writer is aborted before the input closes
        batches = stack.enter_context(contextlib.closing(_batches(shard_uri, rs, batch_size)))
        for batch in batches:
            normalize = _text.normalize
            norm = [normalize(r["text"]) for r in batch]
            scores = clf.score_normalized(norm)
            ntok = np.fromiter((s.count(" ") + 1 for s in norm), dtype=np.int64, count=len(norm))
            keep = scores >= t
            tokens_in += int(ntok.sum())
            sources = [_source(r) for r in batch]
            src_in.update(sources)
            n_keep = int(keep.sum())
            if n_keep:
                if writer is None:
                    writer = stack.enter_context(_corpus.ShardWriter(out_uri, level=compresslevel))
                tokens_kept += int(ntok[keep].sum())
                src_kept.update(compress(sources, keep))
                kept_idx = np.flatnonzero(keep)
                kept_scores = scores[kept_idx].tolist()
                write = writer.write
                for i, s in zip(kept_idx.tolist(), kept_scores):
                    rec = batch[i]
                    rec[SCORE_FIELD] = s
                    write(rec)
                docs_kept += n_keep
        if writer is None and write_empty:
            writer = stack.enter_context(_corpus.ShardWriter(out_uri, level=compresslevel))
    # the output shard is complete (or absent) here

    if writer is None:
        output_shard, output_bytes = None, 0
        if store.exists(out_uri):  # a stale output from an earlier run with other params
            store.delete(out_uri)
    else:
        output_shard, output_bytes = out_uri, store.size(out_uri)
    seconds = time.perf_counter() - t0
    by_source = {s: {"docs_in": n, "docs_kept": src_kept.get(s, 0)} for s, n in sorted(src_in.items())}
    stats = {
        "name": name,
        "input_shard": shard_uri,
        "output_shard": output_shard,
        "output_bytes": output_bytes,
        "threshold": t,
        "keep_rate": keep_rate,
        "model_uri": model_uri,
        "lines": rs.lines,
        "docs_in": rs.docs,
        "docs_kept": docs_kept,
        "tokens_in": tokens_in,
        "tokens_kept": tokens_kept,
        "bad_json": rs.bad_json,
        "bad_utf8": rs.bad_utf8,
        "no_text": rs.no_text,
        "empty_text": rs.empty_text,
        "malformed": rs.malformed,
        "by_source": by_source,
        "seconds": round(seconds, 3),
        "docs_per_second": round(rs.docs / seconds, 1) if seconds > 0 else None,
        "params": params,
    }
    store.write_json(stats_uri, stats)  # LAST: the done-marker
    return stats


# ----------------------------------------------------------------------------- the whole pool


def plan_filter(corpus) -> list[str]:
    """The input shard URIs of the pool: a Manifest, a manifest URI, a corpus prefix or one shard."""
    m = corpus if isinstance(corpus, _corpus.Manifest) else _corpus.resolve_corpus(str(corpus))
    uris = [s.uri for s in m.shards]
    if not uris:
        raise FilterError(f"{corpus} has no shards to filter")
    dup = [u for u, n in Counter(output_name(u) for u in uris).items() if n > 1]
    if dup:
        raise FilterError(f"input shards map to the same output name(s) {dup}: a shard is listed twice")
    return uris


def merge_filter_outputs(
    out_prefix: str,
    threshold: float | None = None,
    keep_rate=None,
    expected_inputs: Sequence[str] | None = None,
) -> _corpus.Manifest:
    """Build ``out_prefix/manifest.json`` from the shards' stats markers; return the Manifest.

    Shards are exactly the markers' existing ``output_shard`` files (docs = kept docs). meta
    holds ``threshold``, ``keep_rate``, ``totals`` (sums over shards), ``by_source`` and
    ``params``. Raises :class:`FilterError` if there are no markers, if markers disagree on the
    threshold or model (or with ``threshold`` when given), or if an ``expected_inputs`` shard
    has no marker. The merge is a pure function of the markers, so rerunning it is always safe.
    """
    out_prefix = str(out_prefix)
    stats_prefix = store.join(out_prefix, STATS_DIR)
    try:
        uris = store.list_uris(stats_prefix, suffixes=(".json",))
    except store.NotFound:
        uris = []
    if not uris:
        raise FilterError(f"no finished filter shards under {out_prefix} (no {STATS_DIR}/*.json markers)")
    stats = [store.read_json(u) for u in uris]

    thresholds = sorted({float(s["threshold"]) for s in stats})
    models = sorted({s.get("model_uri") for s in stats})
    if len(thresholds) > 1 or len(models) > 1:
        raise FilterError(
            f"{out_prefix} mixes shards filtered with different thresholds {thresholds} or models {models}; "
            "rerun the stale shards with overwrite=True or use a fresh out_prefix"
        )
    if threshold is not None and _check_threshold(threshold) != thresholds[0]:
        raise FilterError(f"{out_prefix} was filtered at threshold {thresholds[0]}, not {threshold}")
    if expected_inputs is not None:
        done = {s["input_shard"] for s in stats}
        missing = [u for u in expected_inputs if str(u) not in done]
        if missing:
            raise FilterError(f"{len(missing)} of {len(expected_inputs)} input shards are not finished: {missing[:10]}")
    if keep_rate is None:
        rates = {repr(s.get("keep_rate")) for s in stats}
        keep_rate = stats[0].get("keep_rate") if len(rates) == 1 else None

    totals = {k: 0 for k in _COUNT_KEYS}
    by_source: dict[str, dict] = {}
    shards: list[_corpus.ShardInfo] = []
    for s in sorted(stats, key=lambda s: s["name"]):
        for k in _COUNT_KEYS:
            totals[k] += int(s[k])
        for src, c in s["by_source"].items():
            agg = by_source.setdefault(src, {"docs_in": 0, "docs_kept": 0})
            agg["docs_in"] += c["docs_in"]
            agg["docs_kept"] += c["docs_kept"]
        if s.get("output_shard"):
            shards.append(
                _corpus.ShardInfo(
                    s["output_shard"],
                    docs=int(s["docs_kept"]),
                    bytes=int(s["output_bytes"]),
                    meta={"input_shard": s["input_shard"], "docs_in": s["docs_in"], "tokens_kept": s["tokens_kept"]},
                )
            )
    meta = {
        "threshold": thresholds[0],
        "keep_rate": keep_rate,
        "totals": totals,
        "by_source": dict(sorted(by_source.items())),
        "docs_kept_pct": 100.0 * totals["docs_kept"] / totals["docs_in"] if totals["docs_in"] else 0.0,
        "tokens_kept_pct": 100.0 * totals["tokens_kept"] / totals["tokens_in"] if totals["tokens_in"] else 0.0,
        "n_inputs": len(stats),
        "params": {"threshold": thresholds[0], "keep_rate": keep_rate, "model_uri": models[0]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    m = _corpus.Manifest(shards, meta=meta, kind="corpus")
    m.save(store.join(out_prefix, _corpus.MANIFEST_NAME))
    return m


def _filter_one(kwargs: dict) -> dict:
    return filter_shard(**kwargs)


def filter_corpus(
    model_uri: str,
    corpus,
    out_prefix: str,
    threshold: float,
    keep_rate=None,
    workers: int = 1,
    mp_context: str = "spawn",
    **shard_kwargs,
) -> _corpus.Manifest:
    """Filter every shard of the pool locally (``workers`` processes), then merge.

    The KFP pipeline does the same with a ``ParallelFor`` over :func:`filter_shard`. Each worker
    process scores single-threaded (fastText predict is single-threaded), so ``workers`` up to
    :func:`seedbed.resources.available_cpus` is the useful range. A failing shard does not stop
    the others (they stay resumable); the error is raised after all have run.

    Worker processes are started with ``mp_context`` (default ``"spawn"``: no inherited
    threads, locks or S3 connections); as with any spawn-based pool, a calling *script* needs
    the ``if __name__ == "__main__":`` guard. ``"fork"`` avoids that and reuses the parent's
    loaded model.
    """
    shards = plan_filter(corpus)
    jobs = [
        dict(model_uri=str(model_uri), shard_uri=u, out_prefix=str(out_prefix), threshold=threshold,
             keep_rate=keep_rate, **shard_kwargs)
        for u in shards
    ]
    errors: list[tuple[str, BaseException]] = []
    if workers <= 1 or len(jobs) == 1:
        for j in jobs:
            try:
                filter_shard(**j)
            except Exception as e:  # noqa: BLE001 - collected and re-raised below
                errors.append((j["shard_uri"], e))
    else:
        import multiprocessing as mp

        ctx = mp.get_context(mp_context)
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as ex:
            futs = {ex.submit(_filter_one, j): j["shard_uri"] for j in jobs}
            for f in as_completed(futs):
                try:
                    f.result()
                except Exception as e:  # noqa: BLE001
                    errors.append((futs[f], e))
    if errors:
        first = errors[0][1]
        msg = "; ".join(f"{u}: {type(e).__name__}: {e}" for u, e in errors[:5])
        raise FilterError(f"{len(errors)} of {len(jobs)} shards failed: {msg}") from first
    return merge_filter_outputs(out_prefix, threshold=threshold, keep_rate=keep_rate, expected_inputs=shards)
