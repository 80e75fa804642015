"""BETR stage 2: a deterministic, seeded sample of the pool (SPEC §1.2).

Bottom-k sampling by hashed id: every document gets the key
``int(blake2b(f"{seed}\\x00{id}", digest_size=8))`` and the sample is the ``n`` documents
with the smallest ``(key, id)``. Because a document's key depends only on the seed and its
id, the sample is a property of the *set* of documents: the same seed gives the same sample
whatever the shard order, the number of shards or how the pool was resharded, and a
different seed gives an independent uniform sample. It streams: one pass, memory bounded by
the ``n`` kept records (a max-heap of the current best ``n``; after the first ``n`` documents
almost every document is rejected with one integer comparison).

Duplicate ids: the first record seen with an id is the one considered; later records with
the same id are skipped and counted (``meta["duplicates"]``). With ``count_all_duplicates``
(the default) a set of every id's 8-byte key is kept to count them all (about 100 bytes per
distinct document); without it only duplicates that would enter the sample are caught, which
is all the sample's correctness needs. Which copy of a duplicated id is kept depends on the
read order; ingest (``seedbed.corpus.ingest``) already removes duplicate ids.

Output: the sampled records, all fields kept, as a corpus under ``out_prefix`` ordered by key;
``manifest.json`` meta has ``n_requested``, ``n_sampled``, ``pool_docs`` (distinct ids seen),
``duplicates``, ``excluded``, ``took_all`` (+ a ``note`` when ``n`` exceeds the pool),
``read_stats`` and ``params``. Idempotent per docs/stage-contracts.md.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Iterable

from seedbed import corpus as sc

__all__ = ["SampleError", "BottomK", "sample_key", "bottom_k", "sample_corpus"]


class SampleError(ValueError):
    """Bad sample input (n, empty pool, conflicting earlier output)."""


def sample_key(seed: int, doc_id: str) -> int:
    """The sampling key of one document: 64 bits of blake2b over the seed and the id."""
    h = hashlib.blake2b(f"{seed}\x00{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big")


def _positive_int(n) -> int:
    """``n`` as a positive int (an integral float such as 1e6, as KFP may pass, is accepted)."""
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise SampleError(f"sample size n must be a positive integer, got {n!r}")
    return n


class _Entry:
    """A heap entry ordered *reversed* by (key, id), so heapq's min-heap keeps the largest on top."""

    __slots__ = ("key", "id", "rec")

    def __init__(self, key: int, doc_id: str, rec: dict):
        self.key, self.id, self.rec = key, doc_id, rec

    def __lt__(self, other: "_Entry") -> bool:
        return (self.key, self.id) > (other.key, other.id)


@dataclass
class BottomK:
    """Result of :func:`bottom_k`: the kept records ordered by key, and what was seen."""

    records: list[dict]
    keys: list[int]
    seen: int = 0  # records read (after exclusions), duplicates included
    distinct: int = 0  # distinct ids among them (exact when duplicates are counted)
    duplicates: int = 0
    excluded: int = 0
    no_id: int = 0
    meta: dict = field(default_factory=dict)


def bottom_k(
    records: Iterable[dict],
    n: int,
    seed: int = 0,
    *,
    exclude_ids: Iterable[str] | None = None,
    count_all_duplicates: bool = True,
) -> BottomK:
    """The ``n`` records with the smallest ``sample_key(seed, id)`` (ties broken by id).

    Pure and streaming; see the module docstring. Records without an ``id`` are skipped and
    counted in ``no_id``; ids in ``exclude_ids`` are skipped and counted in ``excluded``.
    """
    n = _positive_int(n)
    excl = set(exclude_ids) if exclude_ids is not None else set()
    heap: list[_Entry] = []
    in_heap: set[str] = set()
    all_keys: set[int] | None = set() if count_all_duplicates else None
    res = BottomK([], [])
    for rec in records:
        doc_id = rec.get("id")
        if doc_id is None or doc_id == "":
            res.no_id += 1
            continue
        doc_id = str(doc_id)
        if doc_id in excl:
            res.excluded += 1
            continue
        res.seen += 1
        key = sample_key(seed, doc_id)
        if all_keys is not None:
            # 64-bit keys: a collision between distinct ids is ~N²/2⁶⁵ likely (negligible)
            if key in all_keys:
                res.duplicates += 1
                continue
            all_keys.add(key)
        if len(heap) < n:
            if doc_id in in_heap:
                res.duplicates += 1
                continue
            heapq.heappush(heap, _Entry(key, doc_id, rec))
            in_heap.add(doc_id)
            continue
        top = heap[0]
        if key > top.key or (key == top.key and doc_id >= top.id):
            continue
        if doc_id in in_heap:
            res.duplicates += 1
            continue
        old = heapq.heapreplace(heap, _Entry(key, doc_id, rec))
        in_heap.discard(old.id)
        in_heap.add(doc_id)
    entries = sorted(heap, key=lambda e: (e.key, e.id))
    res.records = [e.rec for e in entries]
    res.keys = [e.key for e in entries]
    res.distinct = res.seen - res.duplicates
    return res


# ----------------------------------------------------------------------------- the stage


def _corpus_ref(c: sc.Manifest | str) -> str | list[str]:
    """What identifies the input in params: its URI, or the sorted shard URIs of a Manifest."""
    if isinstance(c, sc.Manifest):
        return sorted(s.uri for s in c.shards)
    return str(c)


def _ids_fingerprint(ids: Iterable[str] | None) -> dict | None:
    if ids is None:
        return None
    ids = sorted({str(i) for i in ids})
    h = hashlib.blake2b(digest_size=16)
    for i in ids:
        h.update(i.encode("utf-8", "surrogatepass") + b"\n")
    return {"count": len(ids), "blake2b": h.hexdigest()}


def _check_existing(out_prefix: str, params: dict, overwrite: bool) -> sc.Manifest | None:
    return sc.reuse_or_clear(out_prefix, params, overwrite, "a sample", SampleError)


def sample_corpus(
    corpus: sc.Manifest | str,
    n: int,
    out_prefix: str,
    seed: int = 0,
    overwrite: bool = False,
    exclude_ids: Iterable[str] | None = None,
    docs_per_shard: int = 100_000,
    count_all_duplicates: bool = True,
) -> sc.Manifest:
    """Write a bottom-k sample of ``n`` documents of ``corpus`` under ``out_prefix``.

    ``corpus`` is a corpus prefix, manifest, shard file or a :class:`seedbed.corpus.Manifest`.
    ``n <= 0`` and an empty pool raise :class:`SampleError`; ``n`` larger than the pool takes
    every document and says so in ``meta["took_all"]``/``meta["note"]``. ``exclude_ids`` (for
    example the documents of an earlier sample, to draw a disjoint held-out sample) are never
    sampled. Returns the sample's manifest.
    """
    n = _positive_int(n)
    exclude_ids = None if exclude_ids is None else list(exclude_ids)
    params = {
        "corpus": _corpus_ref(corpus),
        "n": n,
        "seed": seed,
        "exclude_ids": _ids_fingerprint(exclude_ids),
        "docs_per_shard": docs_per_shard,
    }
    existing = _check_existing(out_prefix, params, overwrite)
    if existing is not None:
        return existing

    m = corpus if isinstance(corpus, sc.Manifest) else sc.resolve_corpus(str(corpus))
    stats = sc.ReadStats()
    res = bottom_k(sc.iter_corpus(m, stats), n, seed, exclude_ids=exclude_ids,
                   count_all_duplicates=count_all_duplicates)
    if not res.records:
        raise SampleError(
            f"the pool {_corpus_ref(corpus)} has no usable documents to sample: "
            f"{stats.lines} lines read, {stats.malformed} malformed, {res.excluded} excluded"
        )
    took_all = len(res.records) < n
    meta = {
        "stage": "sample",
        "n_requested": n,
        "n_sampled": len(res.records),
        "pool_docs": res.distinct,
        "duplicates": res.duplicates,
        "duplicates_counted": "all" if count_all_duplicates else "in-sample only",
        "excluded": res.excluded,
        "took_all": took_all,
        "sampling": "bottom-k by blake2b-64(seed, id); output ordered by key",
        "read_stats": stats.as_dict(),
        "params": params,
    }
    if took_all:
        meta["note"] = f"n={n} exceeds the {res.distinct} usable documents of the pool: took all of them"
    return sc.write_corpus(iter(res.records), out_prefix, docs_per_shard=docs_per_shard, meta=meta)
