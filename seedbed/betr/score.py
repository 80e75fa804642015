"""BETR stage 4: rank the sampled documents for every target example, aggregate, label (SPEC §1.4–1.5).

Each target example i ranks all N sampled documents by cosine similarity (rank r_ij, 1 = best).
A document's score aggregates a value v(r) over the examples.

``aggregation="max"`` (default, the paper's best)
    S_j = max_i v(r_ij) for a decreasing v, which equals v(min_i r_ij): only a document's best
    rank matters, so the exact result needs only each example's top-K documents. We compute
    those exactly (:func:`topk_per_example`), take each document's best rank over all examples
    (:func:`min_rank`, ``scatter_reduce`` with ``amin``; a document in no example's top-K gets
    rank K+1, the worst) and store ``score = v(min_rank) = log2(1/min_rank) = -log2(min_rank)``
    (0 for a rank-1 document, ``-log2(K+1)`` for an unmatched one). Documents are ordered by
    (min_rank ascending, best cosine descending): ties in rank, which are common (every
    example has a rank-1 document), are broken by the best cosine over all examples.

``aggregation="mean"``
    S_j = mean_i log2(1/r_ij) over *all* examples and *all* documents. This needs every rank
    (M·N of them): per block of examples we compute the similarities to all documents, sort
    them into ranks and accumulate (:func:`mean_log_rank`). That is O(M·N·log N) work and is
    refused with a clear error when M·N exceeds ``mean_max_pairs`` (default 2e9 pairs: about
    2,000 sorts of a million similarities, minutes of CPU; raise it knowingly). It scored worse
    in the paper (58.2 vs 62.2). Ties are again broken by the best cosine.

Exact top-K (:func:`topk_per_example`)
    Targets T [M, d] and documents X [N, d] are L2-normalised, so S = T Xᵀ are cosines. We loop
    over document chunks (``chunk_size`` documents; targets in row blocks that keep the
    similarity buffer under ``buffer_mb``), compute S_c = T_b X_cᵀ into a reused buffer and
    merge S_c into a running top-K per example. The column maximum of the same S_c is each
    document's best cosine: no second matrix multiply.

    A plain ``torch.topk`` over every chunk costs about as much as the matmul itself on CPU
    (at d=384), so the CPU path (``method="filter"``) uses it only on the first chunk. Every
    example keeps a threshold θ_i, the K-th best cosine found so far (a lower bound of its
    final K-th best). A chunk only matters where S_c > θ_i, and that becomes rare quickly: for
    documents in random order (a sample) about K/j of the j-th chunk's entries. Per chunk: the
    maxima of groups of 32 columns (one ``amax`` pass) show which groups hold a candidate; only
    those groups are gathered and compared with θ (while most groups do, in the first few
    chunks, one compare over the whole chunk is used instead). The surviving (example, doc,
    cosine) candidates are appended to a per-example buffer of width W (default 2K) next to its
    running top-K; when an example's buffer would overflow, its K + W entries are reduced to K
    with ``topk`` and θ_i rises. An example with more than W candidates in one chunk falls back
    to ``topk`` over its row of the chunk. The result is exact (θ_i never exceeds the final K-th
    best, so no member of the top-K is ever filtered out); documents sorted by similarity would
    only make it slower. On CUDA, ``topk`` is fast and every chunk goes through it
    (``method="topk"``, also selectable on CPU).

    Overhead over the bare chunked matmul on 2 CPU cores (M=10K, N=100K, d=384, K=256):
    about 1.35-1.45×; it shrinks with d (the matmul grows, the filter does not).

    Everything is computed in float32 (on CPU always; on CUDA unless ``dtype`` asks for
    float16/bfloat16 with ``method="topk"``, which is faster but rounds cosines to ~3 digits and
    creates rank ties). ``torch.set_num_threads`` is set from the CPUs the process may use
    (:func:`seedbed.resources.available_cpus`: affinity and cgroup quota).

Labels (:func:`label`)
    The top ``positive_pct`` % of documents in the aggregated order are positive (at least one,
    and at least one negative remains), the rest negative; the majority class is downsampled
    uniformly at random (seeded) to the size of the minority class. ``labels.jsonl.gz`` holds
    the balanced set in a seeded random order (fastText trains in file order; a file sorted
    by label would hurt).

Outputs under ``out_prefix`` (docs/stage-contracts.md)
    ``labels.jsonl.gz``: ``{"id", "text", "label", "score", "min_rank", "best_cos", "source"?}``;
    ``top_matches.json``: ``[{"target_id", "benchmark", "target_text", "matches": [{"id", "cos",
    "text", "source"}]}]`` for a few target examples spread over the benchmarks;
    ``score.json`` (written last): ``{"n_docs", "n_targets", "top_k", "aggregation",
    "positive_pct", "n_positive", "n_negative", "n_negative_kept", "params", ...}``.
    In ``mean`` mode ``min_rank`` is the exact best rank (no K cap).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
import numpy as np

from seedbed import corpus as sc
from seedbed import store
from seedbed.betr.embed import load_embeddings, torch_threads
from seedbed.resources import available_cpus

__all__ = [
    "ScoreError",
    "AGGREGATIONS",
    "DEFAULT_MEAN_MAX_PAIRS",
    "TopK",
    "topk_per_example",
    "min_rank",
    "min_rank_and_best_cos",
    "mean_log_rank",
    "rank_value",
    "aggregate",
    "Labels",
    "label",
    "score_and_label",
]

log = logging.getLogger(__name__)

AGGREGATIONS = ("max", "mean")
DEFAULT_MEAN_MAX_PAIRS = 2_000_000_000
DEFAULT_CHUNK_CPU = 4096
DEFAULT_CHUNK_CUDA = 32768
_GROUP = 32  # columns per group in the CPU candidate filter
_DENSE_GROUP_FRACTION = 0.3  # above this share of candidate groups, filter the whole chunk instead
_NEG_INF = float("-inf")


class ScoreError(ValueError):
    """Bad input or settings for the score stage; the message names the problem."""


# ----------------------------------------------------------------------------- small helpers


def _torch():
    import torch

    return torch


def _resolve_device(device: str) -> str:
    torch = _torch()
    device = str(device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ScoreError(f"device {device!r} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def _resolve_dtype(dtype: str | None, device: str):
    torch = _torch()
    key = str(dtype or "auto").lower()
    if key in ("auto", "float32", "fp32"):
        return torch.float32
    if key in ("float16", "fp16", "bfloat16", "bf16"):
        if device.startswith("cpu"):
            raise ScoreError(f"dtype={dtype!r} is for CUDA only: on CPU the scorer computes in float32")
        return torch.float16 if key in ("float16", "fp16") else torch.bfloat16
    raise ScoreError(f"unknown dtype {dtype!r}: use 'auto', 'float32', 'float16' or 'bfloat16'")


def _as_tensor(a, name: str):
    torch = _torch()
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        arr = np.asarray(a)
        if arr.dtype not in (np.float16, np.float32, np.float64):
            raise ScoreError(f"{name} must be a float array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise ScoreError(f"{name} must be a 2-D [n, d] matrix, got shape {tuple(t.shape)}")
    return t


def _check_pair(T, X):
    if T.shape[0] == 0:
        raise ScoreError("no target examples: the target embeddings are empty")
    if X.shape[0] == 0:
        raise ScoreError("no documents: the document embeddings are empty")
    if T.shape[1] != X.shape[1]:
        raise ScoreError(
            f"targets have dimension {T.shape[1]} but documents {X.shape[1]}: "
            "they must be embedded with the same model"
        )


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ScoreError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


# ----------------------------------------------------------------------------- exact top-K


@dataclass
class TopK:
    """Each example's top-K documents, best first, and every document's best cosine."""

    values: np.ndarray  # [M, K] float32, descending per row
    indices: np.ndarray  # [M, K] int64 document indices
    best_cos: np.ndarray  # [N] float32: max over examples of the cosine

    @property
    def k(self) -> int:
        return int(self.values.shape[1])


class _RunningTopK:
    """Per-row running top-K plus a candidate buffer: V/I are [M, K+W]; columns K.. are the buffer."""

    def __init__(self, m: int, k: int, w: int, n_docs: int, device):
        torch = _torch()
        self.k, self.w = k, w
        idx_dtype = torch.int32 if n_docs < 2**31 - 1 else torch.int64
        self.V = torch.full((m, k + w), _NEG_INF, dtype=torch.float32, device=device)
        self.I = torch.zeros((m, k + w), dtype=idx_dtype, device=device)
        self.fill = torch.zeros(m, dtype=torch.int64, device=device)
        self.thr = torch.full((m,), _NEG_INF, dtype=torch.float32, device=device)

    def merge_block(self, r: int, m: int, ev=None, ei=None) -> None:
        """Reduce rows r..r+m (running top-K + buffer + optional extra columns) to their top K."""
        torch = _torch()
        k = self.k
        v, i = self.V[r:r + m], self.I[r:r + m]
        if ev is not None:
            v = torch.cat([v, ev], 1)
            i = torch.cat([i, ei.to(i.dtype)], 1)
        nv, j = torch.topk(v, k, dim=1, sorted=False)
        ni = torch.gather(i, 1, j)
        self.V[r:r + m, :k] = nv
        self.I[r:r + m, :k] = ni
        self.V[r:r + m, k:] = _NEG_INF
        self.fill[r:r + m] = 0
        self.thr[r:r + m] = nv.amin(1)

    def set_block(self, r: int, m: int, v, i) -> None:
        """Start rows r..r+m from their first chunk's top entries (``v``/``i``: [m, <=K])."""
        c = v.shape[1]
        self.V[r:r + m, :c] = v
        self.I[r:r + m, :c] = i.to(self.I.dtype)
        if c == self.k:  # a full top-K: its minimum is a valid threshold
            self.thr[r:r + m] = v.amin(1)

    def merge_rows(self, rows, ev=None, ei=None) -> None:
        """Same as :meth:`merge_block` for an index tensor of (global) rows."""
        torch = _torch()
        k = self.k
        v, i = self.V.index_select(0, rows), self.I.index_select(0, rows)
        if ev is not None:
            v = torch.cat([v, ev], 1)
            i = torch.cat([i, ei.to(i.dtype)], 1)
        nv, j = torch.topk(v, k, dim=1, sorted=False)
        self.V[:, :k].index_copy_(0, rows, nv)
        self.I[:, :k].index_copy_(0, rows, torch.gather(i, 1, j))
        self.V[:, k:].index_fill_(0, rows, _NEG_INF)
        self.fill.index_fill_(0, rows, 0)
        self.thr.index_copy_(0, rows, nv.amin(1))

    def result(self):
        torch = _torch()
        self.merge_block(0, self.V.shape[0])
        vals, order = torch.sort(self.V[:, : self.k], dim=1, descending=True)
        idx = torch.gather(self.I[:, : self.k], 1, order).to(torch.int64)
        return vals, idx


def _sparse_update(run: _RunningTopK, S, r: int, s: int) -> None:
    """Merge the chunk block S (rows r.., docs s..) into ``run`` through the threshold filter."""
    torch = _torch()
    m, n = S.shape
    g = _GROUP
    ng = n // g
    th = run.thr[r:r + m]
    G = S.view(m, ng, g).amax(2)  # [m, ng] group maxima: one cheap pass
    lin = torch.nonzero((G > th.unsqueeze(1)).view(-1)).squeeze(1)  # candidate groups, row-major
    if lin.numel() == 0:
        return
    if lin.numel() > _DENSE_GROUP_FRACTION * m * ng:
        # most groups hold a candidate (early chunks): one compare + nonzero over S is cheaper
        e = torch.nonzero((S > th.unsqueeze(1)).view(-1)).squeeze(1)
        vals = S.view(-1).index_select(0, e)
        rows = torch.div(e, n, rounding_mode="floor")
        cols = e - rows * n + s
    else:
        blocks = S.view(m * ng, g).index_select(0, lin)  # [nb, g]
        brow = torch.div(lin, ng, rounding_mode="floor")
        keep = blocks > th.index_select(0, brow).unsqueeze(1)
        e = torch.nonzero(keep.view(-1)).squeeze(1)  # flat positions in blocks, row-major
        vals = blocks.view(-1).index_select(0, e)
        eb = torch.div(e, g, rounding_mode="floor")
        rows = brow.index_select(0, eb)  # local rows, ascending
        cols = (lin.index_select(0, eb) - rows * ng) * g + (e - eb * g) + s
    _insert(run, S, r, s, rows, cols, vals)


def _insert(run: _RunningTopK, S, r: int, s: int, rows, cols, vals) -> None:
    """Append candidates (local rows ascending) to the buffers of rows r..r+m, flushing full ones."""
    torch = _torch()
    m, n = S.shape
    k, w = run.k, run.w
    counts = torch.bincount(rows, minlength=m)
    fill = run.fill[r:r + m]
    over = (fill + counts) > w
    if bool(over.any()):
        big = counts > w
        flush = torch.nonzero(over & ~big).squeeze(1)
        if flush.numel():
            run.merge_rows(flush + r)  # empties their buffers and raises their thresholds
        if bool(big.any()):
            # more candidates than the buffer holds: top-K of the whole row of this chunk
            bigrows = torch.nonzero(big).squeeze(1)
            bv, bi = torch.topk(S.index_select(0, bigrows), min(k, n), dim=1, sorted=False)
            run.merge_rows(bigrows + r, bv, bi + s)
            sel = ~big.index_select(0, rows)
            rows, cols, vals = rows[sel], cols[sel], vals[sel]
            counts = counts.masked_fill(big, 0)
        fill = run.fill[r:r + m]
    if rows.numel() == 0:
        return
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(rows.numel(), device=rows.device) - start.index_select(0, rows)
    slot = (rows + r) * (k + w) + k + fill.index_select(0, rows) + pos
    run.V.view(-1).index_copy_(0, slot, vals)
    run.I.view(-1).index_copy_(0, slot, cols.to(run.I.dtype))
    run.fill[r:r + m] += counts


def topk_per_example(
    targets,
    docs,
    k: int,
    chunk_size: int | None = None,
    device: str = "cpu",
    dtype: str | None = "auto",
    buffer_mb: int = 256,
    threads: int | None = None,
    candidate_width: int | None = None,
    method: str = "auto",
) -> TopK:
    """Exact top-``k`` documents per target example by cosine, plus every document's best cosine.

    ``targets`` [M, d] and ``docs`` [N, d] are L2-normalised float arrays (numpy or torch; docs
    may be float16, they are converted chunk by chunk). ``k`` is clamped to N. ``chunk_size``
    documents are compared with a block of targets at a time (default 4096 on CPU, 32768 on
    CUDA); target blocks keep the similarity buffer under ``buffer_mb``. ``threads`` sets
    torch's CPU threads for the call (default: the CPUs this process may use).
    ``method``: ``"filter"`` (threshold filter + candidate buffer, the CPU default), ``"topk"``
    (``torch.topk`` of every chunk merged into the running top-K, the CUDA default) or ``"auto"``.
    Both are exact. ``candidate_width`` is the per-example candidate buffer of the filter
    (default max(2K, 64)). Returns :class:`TopK` (numpy arrays; values sorted descending per row).
    """
    torch = _torch()
    T = _as_tensor(targets, "targets")
    X = _as_tensor(docs, "docs")
    _check_pair(T, X)
    k = _positive_int(k, "k")
    M, N = T.shape[0], X.shape[0]
    k = min(k, N)
    device = _resolve_device(device)
    cdtype = _resolve_dtype(dtype, device)
    on_cuda = device.startswith("cuda")
    chunk = _positive_int(chunk_size, "chunk_size") if chunk_size is not None else (
        DEFAULT_CHUNK_CUDA if on_cuda else DEFAULT_CHUNK_CPU)
    chunk = max(chunk, k)  # the first chunk must fill every running top-K
    if chunk > _GROUP:
        chunk = -(-chunk // _GROUP) * _GROUP  # whole groups in every chunk but the last
    chunk = min(chunk, N)
    if method not in ("auto", "filter", "topk"):
        raise ScoreError(f"unknown method {method!r}: use 'auto', 'filter' or 'topk'")
    use_filter = method == "filter" or (method == "auto" and not on_cuda)
    if use_filter and cdtype != torch.float32:
        raise ScoreError("method='filter' computes in float32; use method='topk' with a half-precision dtype")
    width = max(2 * k, 64) if candidate_width is None else _positive_int(candidate_width, "candidate_width")
    if not use_filter:
        width = 0  # no candidate buffer: every chunk goes through topk
    row_block = max(1, min(M, (int(buffer_mb) << 20) // (4 * chunk)))

    with torch_threads(threads):
        T = T.to(device=device, dtype=cdtype).contiguous()
        run = _RunningTopK(M, k, width, N, device)
        best = torch.empty(N, dtype=torch.float32, device=device)
        buf = torch.empty(row_block * chunk, dtype=cdtype, device=device)
        for s in range(0, N, chunk):
            xc = X[s:s + chunk].to(device=device, dtype=cdtype)
            n = xc.shape[0]
            xt = xc.t()
            colmax = None
            for r in range(0, M, row_block):
                m = min(row_block, M - r)
                S = buf[: m * n].view(m, n)
                torch.mm(T[r:r + m], xt, out=S)
                cm = S.amax(0)
                colmax = cm if colmax is None else torch.maximum(colmax, cm, out=colmax)
                if not use_filter or s == 0 or n % _GROUP:
                    Sf = S.float() if S.dtype != torch.float32 else S
                    v, i = torch.topk(Sf, min(k, n), dim=1, sorted=False)
                    if s == 0:  # nothing to merge with yet
                        run.set_block(r, m, v, i)
                    else:
                        run.merge_block(r, m, v, i + s)
                else:
                    _sparse_update(run, S, r, s)
            best[s:s + n] = colmax.float()
        vals, idx = run.result()
    return TopK(vals.cpu().numpy(), idx.cpu().numpy(), best.cpu().numpy())


def min_rank(indices, n_docs: int) -> np.ndarray:
    """Each document's best rank over the examples' top-K lists (1 = best); K+1 where in none.

    ``indices`` [M, K] are the documents of every example's top-K, best first (as in
    :class:`TopK`). Returns int64 [n_docs].
    """
    torch = _torch()
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    if idx.ndim != 2:
        raise ScoreError(f"indices must be [M, K], got shape {tuple(idx.shape)}")
    M, K = idx.shape
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_docs):
        raise ScoreError(f"indices out of range for {n_docs} documents")
    out = torch.full((n_docs,), K + 1, dtype=torch.int64)
    ranks = torch.arange(1, K + 1, dtype=torch.int64).expand(M, K)
    out.scatter_reduce_(0, idx.reshape(-1), ranks.reshape(-1), reduce="amin", include_self=True)
    return out.numpy()


def min_rank_and_best_cos(
    targets,
    docs,
    k: int,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray, TopK]:
    """(min_rank [N] int64, best_cos [N] float32, the :class:`TopK`) — see :func:`topk_per_example`."""
    top = topk_per_example(targets, docs, k, **kwargs)
    n = _as_tensor(docs, "docs").shape[0]
    return min_rank(top.indices, n), top.best_cos, top


# ----------------------------------------------------------------------------- mean aggregation


def mean_log_rank(
    targets,
    docs,
    chunk_size: int | None = None,
    device: str = "cpu",
    buffer_mb: int = 512,
    threads: int | None = None,
    max_pairs: int = DEFAULT_MEAN_MAX_PAIRS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over all examples of log2(1/r_ij) for every document, with its exact best rank and best cosine.

    Needs the rank of every document for every example: per block of examples the similarities
    to all documents are sorted into ranks. Refused (:class:`ScoreError`) when M·N exceeds
    ``max_pairs``. Returns (mean_score [N] float64, min_rank [N] int64, best_cos [N] float32).
    """
    torch = _torch()
    T = _as_tensor(targets, "targets")
    X = _as_tensor(docs, "docs")
    _check_pair(T, X)
    M, N = T.shape[0], X.shape[0]
    if M * N > max_pairs:
        raise ScoreError(
            f"aggregation='mean' needs the rank of every document for every example: "
            f"M·N = {M:,} × {N:,} = {M * N:,} pairs exceeds mean_max_pairs={int(max_pairs):,}. "
            "Use aggregation='max' (exact from each example's top-K), fewer targets or documents, "
            "or raise mean_max_pairs knowingly"
        )
    device = _resolve_device(device)
    chunk = min(N, _positive_int(chunk_size, "chunk_size") if chunk_size is not None else 65536)
    # per example row and doc: sim f32, sort scratch, order i64, log2 rank f64, position i64
    block = max(1, min(M, (int(buffer_mb) << 20) // (40 * N)))
    with torch_threads(threads):
        T = T.to(device=device, dtype=torch.float32).contiguous()
        lg = torch.log2(torch.arange(1, N + 1, dtype=torch.float64, device=device))
        pos = torch.arange(1, N + 1, dtype=torch.int64, device=device)
        acc = torch.zeros(N, dtype=torch.float64, device=device)
        minr = torch.full((N,), N + 1, dtype=torch.int64, device=device)
        best = torch.full((N,), _NEG_INF, dtype=torch.float32, device=device)
        S = torch.empty((block, N), dtype=torch.float32, device=device)
        for r in range(0, M, block):
            m = min(block, M - r)
            Sb = S[:m]
            for s in range(0, N, chunk):
                xc = X[s:s + chunk].to(device=device, dtype=torch.float32)
                Sb[:, s:s + xc.shape[0]] = T[r:r + m] @ xc.t()
            torch.maximum(best, Sb.amax(0), out=best)
            order = torch.argsort(Sb, dim=1, descending=True)  # order[i, p] = doc at rank p+1
            flat = order.reshape(-1)
            acc.index_add_(0, flat, lg.repeat(m))
            minr.scatter_reduce_(0, flat, pos.repeat(m), reduce="amin", include_self=True)
        mean = (-acc / M).cpu().numpy()
    return mean, minr.cpu().numpy(), best.cpu().numpy()


# ----------------------------------------------------------------------------- aggregation and labels


def rank_value(rank) -> np.ndarray:
    """v(r) = log2(1/r) = -log2(r): 0 at rank 1, decreasing (the SPEC's value of a rank)."""
    return -np.log2(np.asarray(rank, dtype=np.float64))


def aggregate(
    min_rank: np.ndarray,
    best_cos: np.ndarray,
    aggregation: str = "max",
    mean_score: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(score [N] float64, order [N] int64 best first) for the chosen aggregation.

    ``max``: score = v(min_rank); order by (min_rank asc, best_cos desc).
    ``mean``: score = ``mean_score`` (from :func:`mean_log_rank`); order by (score desc, best_cos desc).
    """
    min_rank = np.asarray(min_rank)
    best_cos = np.asarray(best_cos, dtype=np.float64)
    if min_rank.shape != best_cos.shape or min_rank.ndim != 1:
        raise ScoreError(f"min_rank {min_rank.shape} and best_cos {best_cos.shape} must be 1-D of equal length")
    if aggregation == "max":
        score = rank_value(min_rank)
        order = np.lexsort((-best_cos, min_rank))
    elif aggregation == "mean":
        if mean_score is None:
            raise ScoreError("aggregation='mean' needs mean_score (see mean_log_rank)")
        score = np.asarray(mean_score, dtype=np.float64)
        if score.shape != best_cos.shape:
            raise ScoreError(f"mean_score {score.shape} does not match best_cos {best_cos.shape}")
        order = np.lexsort((-best_cos, -score))
    else:
        raise ScoreError(f"unknown aggregation {aggregation!r}: use one of {AGGREGATIONS}")
    return score, order.astype(np.int64)


@dataclass
class Labels:
    """The label of every document and the balanced subset that is kept for training."""

    labels: np.ndarray  # [N] int8: 1 positive, 0 negative
    keep: np.ndarray  # [N] bool: in the balanced training set
    n_positive: int
    n_negative: int
    n_positive_kept: int
    n_negative_kept: int


def label(order: np.ndarray, positive_pct: float = 10.0, seed: int = 0) -> Labels:
    """Top ``positive_pct`` % of ``order`` positive, the rest negative; downsample the majority class.

    ``order`` lists document indices best first. The number of positives is
    ``round(N * pct / 100)`` clipped to [1, N-1]. The kept majority-class documents are a
    uniform random subset (``numpy.random.default_rng(seed)``) the size of the minority class.
    """
    pct = _check_pct(positive_pct)
    order = np.asarray(order, dtype=np.int64)
    n = order.size
    if n < 2:
        raise ScoreError(f"labelling needs at least 2 documents (one per class), got {n}")
    if not np.array_equal(np.sort(order), np.arange(n)):
        raise ScoreError("order must be a permutation of 0..N-1")
    n_pos = int(min(max(round(n * pct / 100.0), 1), n - 1))
    labels = np.zeros(n, dtype=np.int8)
    labels[order[:n_pos]] = 1
    pos = np.sort(order[:n_pos])
    neg = np.sort(order[n_pos:])
    rng = np.random.default_rng(seed)
    keep = np.zeros(n, dtype=bool)
    if len(neg) >= len(pos):
        keep[pos] = True
        keep[rng.choice(neg, size=len(pos), replace=False)] = True
    else:
        keep[neg] = True
        keep[rng.choice(pos, size=len(neg), replace=False)] = True
    kp = int(keep[labels == 1].sum())
    kn = int(keep[labels == 0].sum())
    return Labels(labels, keep, n_pos, n - n_pos, kp, kn)


def _check_pct(positive_pct) -> float:
    try:
        pct = float(positive_pct)
    except (TypeError, ValueError):
        raise ScoreError(f"positive_pct must be a number in (0, 100), got {positive_pct!r}") from None
    if not (0.0 < pct < 100.0) or math.isnan(pct):
        raise ScoreError(f"positive_pct must be in (0, 100) (exclusive), got {positive_pct!r}")
    return pct


# ----------------------------------------------------------------------------- the stage


def _ref(x) -> str | list[str] | None:
    if x is None:
        return None
    if isinstance(x, sc.Manifest):
        return sorted(s.uri for s in x.shards)
    return str(x)


def _load_emb(x, what: str) -> tuple[list[str], np.ndarray, dict]:
    if isinstance(x, sc.Manifest):
        m = x
    else:
        try:
            m = sc.Manifest.load(str(x))
        except store.NotFound:
            raise ScoreError(f"{what} {x}: no manifest.json there (unfinished embed stage or wrong URI)") from None
    ids, arr = load_embeddings(m)
    return ids, arr, m.meta


def _as_corpus(ref) -> sc.Manifest | None:
    if ref is None:
        return None
    if isinstance(ref, sc.Manifest):
        return ref
    if isinstance(ref, (list, tuple)):
        return sc.Manifest([sc.ShardInfo(str(u), -1, 0) for u in ref])
    return sc.resolve_corpus(str(ref))


def _pick_targets(target_ids: list[str], target_recs: dict[str, dict], n: int, seed: int) -> list[int]:
    """``n`` target indices spread over the benchmarks (round robin, seeded order within each).

    The benchmark is the target record's ``benchmark`` field, else the prefix of a
    ``benchmark/split/id`` target id (the targets stage's format).
    """
    M = len(target_ids)
    n = min(n, M)
    if n <= 0:
        return []
    by_bench: dict[str, list[int]] = {}
    for i, tid in enumerate(target_ids):
        b = (target_recs.get(tid) or {}).get("benchmark")
        if b is None and "/" in tid:
            b = tid.split("/", 1)[0]
        by_bench.setdefault(str(b) if b is not None else "", []).append(i)
    rng = np.random.default_rng(seed)
    queues = {b: list(rng.permutation(v)) for b, v in sorted(by_bench.items())}
    picked: list[int] = []
    while len(picked) < n:
        for b in list(queues):
            if queues[b] and len(picked) < n:
                picked.append(int(queues[b].pop(0)))
    return picked


def score_and_label(
    target_emb: sc.Manifest | str,
    doc_emb: sc.Manifest | str,
    doc_corpus: sc.Manifest | str,
    out_prefix: str,
    top_k: int = 256,
    aggregation: str = "max",
    positive_pct: float = 10.0,
    seed: int = 0,
    chunk_size: int | None = None,
    device: str = "auto",
    mean_max_pairs: int = DEFAULT_MEAN_MAX_PAIRS,
    n_top_matches_targets: int = 5,
    n_matches: int = 3,
    overwrite: bool = False,
    target_corpus: sc.Manifest | str | None = None,
    dtype: str = "auto",
    threads: int | None = None,
) -> dict:
    """Rank the sampled docs for every target example, aggregate, label; write the three outputs.

    ``target_emb`` / ``doc_emb``: embeddings manifests (or their URIs) from
    :func:`seedbed.betr.embed.embed_corpus`. ``doc_corpus``: the corpus the documents were
    embedded from (the sample), for the texts of the labelled documents. ``target_corpus``: the
    targets corpus, for ``top_matches.json`` (default: the source recorded in the target
    embeddings' manifest). ``top_k`` (K) is clamped to the number of documents. Returns the
    content of ``score.json``. Raises :class:`ScoreError` for empty inputs, duplicate document
    ids, mismatched models/dimensions, bad settings, or a finished output made with other params.
    """
    t_start = time.perf_counter()
    top_k = _positive_int(top_k, "top_k")
    if aggregation not in AGGREGATIONS:
        raise ScoreError(f"unknown aggregation {aggregation!r}: use one of {AGGREGATIONS}")
    pct = _check_pct(positive_pct)
    n_top_matches_targets = int(n_top_matches_targets)
    n_matches = int(n_matches)
    params = {
        "target_emb": _ref(target_emb),
        "doc_emb": _ref(doc_emb),
        "doc_corpus": _ref(doc_corpus),
        "target_corpus": _ref(target_corpus),
        "top_k": top_k,
        "aggregation": aggregation,
        "positive_pct": pct,
        "seed": int(seed),
        "n_top_matches_targets": n_top_matches_targets,
        "n_matches": n_matches,
    }
    score_uri = store.join(out_prefix, "score.json")
    labels_uri = store.join(out_prefix, "labels.jsonl.gz")
    matches_uri = store.join(out_prefix, "top_matches.json")
    done = sc.reuse_finished(score_uri, params, overwrite, "scores", ScoreError)
    if done is not None:
        log.info("score: %s already complete, returning it", out_prefix)
        return done

    # ---- inputs
    t_ids, T, t_meta = _load_emb(target_emb, "target embeddings")
    d_ids, X, d_meta = _load_emb(doc_emb, "document embeddings")
    if len(t_ids) == 0:
        raise ScoreError(f"the target embeddings {_ref(target_emb)} are empty: no target examples")
    if len(d_ids) == 0:
        raise ScoreError(f"the document embeddings {_ref(doc_emb)} are empty: no documents")
    if t_meta.get("model") and d_meta.get("model") and t_meta["model"] != d_meta["model"]:
        raise ScoreError(
            f"targets were embedded with {t_meta['model']!r} but documents with {d_meta['model']!r}: "
            "both sides must use the same model"
        )
    if T.shape[1] != X.shape[1]:
        raise ScoreError(f"target dimension {T.shape[1]} != document dimension {X.shape[1]}")
    if len(set(d_ids)) != len(d_ids):
        seen: set[str] = set()
        dups = []
        for i in d_ids:
            if i in seen and len(dups) < 5:
                dups.append(i)
            seen.add(i)
        raise ScoreError(
            f"the document embeddings {_ref(doc_emb)} hold duplicate ids ({len(d_ids) - len(seen)} "
            f"duplicates, e.g. {dups}): ids must be unique to map scores back to documents"
        )
    M, N = T.shape[0], X.shape[0]
    K = min(top_k, N)
    if N < 2:
        raise ScoreError(f"labelling needs at least 2 documents, the document embeddings hold {N}")
    device_r = _resolve_device(device)
    n_threads = available_cpus() if threads is None else int(threads)

    # ---- rank and aggregate
    t0 = time.perf_counter()
    top = None
    mean_score = None
    if aggregation == "max":
        mr, best, top = min_rank_and_best_cos(T, X, K, chunk_size=chunk_size, device=device_r,
                                              dtype=dtype, threads=n_threads)
    else:
        mean_score, mr, best = mean_log_rank(T, X, chunk_size=chunk_size, device=device_r,
                                             threads=n_threads, max_pairs=mean_max_pairs)
    t_rank = time.perf_counter() - t0
    score, order = aggregate(mr, best, aggregation, mean_score)
    lab = label(order, pct, seed)

    # ---- top matches for a few targets spread over benchmarks
    tc = _as_corpus(target_corpus if target_corpus is not None else t_meta.get("source"))
    target_recs: dict[str, dict] = {}
    if tc is not None and n_top_matches_targets > 0:
        want = set(t_ids)
        try:
            for rec in sc.iter_corpus(tc):
                if rec["id"] in want:
                    target_recs[rec["id"]] = rec
        except (store.StoreError, sc.CorpusError) as e:
            if target_corpus is not None:
                raise
            log.warning("score: cannot read the targets corpus %s (%s); top_matches without texts", _ref(tc), e)
    picked = _pick_targets(t_ids, target_recs, max(0, n_top_matches_targets), seed)
    nm = max(0, min(n_matches, N))
    if picked and nm:
        if top is not None and nm <= top.k:
            m_vals, m_idx = top.values[picked, :nm], top.indices[picked, :nm]
        else:
            sub = topk_per_example(T[picked], X, nm, device=device_r, threads=n_threads)
            m_vals, m_idx = sub.values, sub.indices
    else:
        m_vals = np.zeros((len(picked), 0), np.float32)
        m_idx = np.zeros((len(picked), 0), np.int64)

    # ---- texts of the kept and matched documents, one pass over the doc corpus
    kept = np.flatnonzero(lab.keep)
    need = {d_ids[i]: int(i) for i in kept}
    for i in np.unique(m_idx):
        need.setdefault(d_ids[int(i)], int(i))
    recs: dict[int, dict] = {}
    for rec in sc.iter_corpus(_as_corpus(doc_corpus)):
        j = need.get(rec["id"])
        if j is not None and j not in recs:
            recs[j] = {"text": rec["text"], "source": rec.get("source")}
    missing = [d for d, j in need.items() if j not in recs]
    if missing:
        raise ScoreError(
            f"{len(missing)} scored documents are not in doc_corpus {_ref(doc_corpus)} "
            f"(e.g. {missing[:3]}): pass the corpus the document embeddings were made from"
        )

    # ---- write: labels, top matches, then score.json last
    rng = np.random.default_rng([int(seed), 1])
    with sc.ShardWriter(labels_uri) as w:
        for i in rng.permutation(kept):
            i = int(i)
            r = {
                "id": d_ids[i],
                "text": recs[i]["text"],
                "label": int(lab.labels[i]),
                "score": float(score[i]),
                "min_rank": int(mr[i]),
                "best_cos": round(float(best[i]), 6),
            }
            if recs[i]["source"] is not None:
                r["source"] = recs[i]["source"]
            w.write(r)
    matches = []
    for row, ti in enumerate(picked):
        trec = target_recs.get(t_ids[ti]) or {}
        matches.append({
            "target_id": t_ids[ti],
            "benchmark": trec.get("benchmark", t_ids[ti].split("/", 1)[0] if "/" in t_ids[ti] else None),
            "target_text": trec.get("text"),
            "matches": [
                {"id": d_ids[int(j)], "cos": round(float(v), 6), "text": recs[int(j)]["text"],
                 "source": recs[int(j)]["source"]}
                for v, j in zip(m_vals[row], m_idx[row])
            ],
        })
    store.write_json(matches_uri, matches)
    cut = order[lab.n_positive - 1]
    result = {
        "n_docs": int(N),
        "n_targets": int(M),
        "top_k": int(K),
        "aggregation": aggregation,
        "positive_pct": pct,
        "n_positive": lab.n_positive,
        "n_negative": lab.n_negative,
        "n_negative_kept": lab.n_negative_kept,
        "n_positive_kept": lab.n_positive_kept,
        "n_labels": int(len(kept)),
        "n_unmatched": int((mr > K).sum()) if aggregation == "max" else None,
        "cut": {"score": float(score[cut]), "min_rank": int(mr[cut]), "best_cos": float(best[cut])},
        "best_cos_quantiles": {q: float(np.quantile(best, float(q))) for q in ("0.1", "0.5", "0.9", "0.99")},
        "value": "score = log2(1/min_rank) (max) or mean_i log2(1/r_ij) (mean); ties by best_cos",
        "model": d_meta.get("model"),
        "dim": int(X.shape[1]),
        "seconds": {"rank": round(t_rank, 3), "total": round(time.perf_counter() - t_start, 3)},
        "runtime": {"device": device_r, "threads": n_threads, "chunk_size": chunk_size},
        "outputs": {"labels": labels_uri, "top_matches": matches_uri},
        "params": params,
    }
    store.write_json(score_uri, result)
    return result
