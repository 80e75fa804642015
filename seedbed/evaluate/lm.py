"""Held-out language-model loss per domain, and the unigram baseline it is compared with.

The inputs are the ``valid`` split shards of a token dataset (docs/training-contracts.md,
"Token dataset"): per domain, a list of 1-D integer arrays, each the concatenation of whole
documents, every one followed by ``eos_id``. This module takes the arrays themselves, so it
does not depend on the token-dataset reader; :func:`heldout_loss_for_dataset` and
:func:`unigram_baseline_for_dataset` are thin helpers over anything with the reader's
``domains`` / ``vocab_size`` / ``shards(domain, split)`` API.

**Windows.** Each array is cut into non-overlapping windows of ``seq_len`` tokens
(``a[0:L], a[L:2L], ...``; the last one may be shorter). A window of ``n`` tokens is one
forward pass and scores its positions ``1..n-1`` (every token but the first, each predicted
from the tokens before it in the same window). Windows never span two arrays (shards), and a
window shorter than 2 tokens scores nothing and is skipped. ``max_tokens`` caps the tokens read
per domain: windows are taken in order and the last one is cut so that at most ``max_tokens``
tokens are read (one fewer per window is scored).

**Metrics.** ``loss`` is the mean next-token cross-entropy in nats over the scored positions,
``ppl = exp(loss)``, ``tokens`` the number of scored positions, ``windows`` the forward passes.
The ``"all"`` entry pools every domain's scored positions (token-weighted mean).

**Unigram baseline.** :func:`unigram_baseline` scores *exactly the same positions* with a
unigram model fitted on the train split with add-one smoothing,
``p(t) = (count(t) + 1) / (N + V)`` (``V = len(train_counts)``), so the two losses are
directly comparable: a model that does not beat its unigram baseline has learned nothing about
context.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import store

__all__ = [
    "EvaluationError",
    "ModelLoadError",
    "resolve_device",
    "load_model",
    "windows",
    "heldout_loss",
    "heldout_loss_for_dataset",
    "unigram_counts",
    "unigram_baseline",
    "unigram_baseline_for_dataset",
    "default_cache_dir",
]

#: the key of the pooled, token-weighted entry in the result dicts
ALL = "all"


class EvaluationError(ValueError):
    """Bad evaluation input (no held-out tokens, unknown task, mismatched vocabulary...)."""


class ModelLoadError(EvaluationError):
    """The model URI is missing or does not hold a Hugging Face causal LM + tokenizer."""


# ----------------------------------------------------------------------------- model


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"``/None → ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else as given."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _torch_dtype(dtype: str | None, device: str):
    import torch

    if dtype in (None, "", "auto"):
        return "auto"
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise EvaluationError(f"unknown dtype {dtype!r}: use auto, {', '.join(sorted(names))}")
    return names[dtype]


def resolve_model_uri(uri: str) -> str:
    """A model directory, or a training run's ``out_uri`` (whose model is ``<out_uri>/model``)."""
    uri = str(uri)
    if not store.exists(store.join(uri, "config.json")) and store.exists(store.join(uri, "model", "config.json")):
        return store.join(uri, "model")
    return uri


def _local_model_dir(model_uri: str, cache_dir: str | os.PathLike | None) -> Path:
    uri = resolve_model_uri(model_uri)
    if store.is_s3(uri):
        dest = store.local_cache_path(uri.rstrip("/"), str(cache_dir) if cache_dir else None)
        try:
            store.download_dir(uri, dest)
        except store.NotFound:
            raise ModelLoadError(f"no model at {uri}: nothing under that prefix") from None
        return dest
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    if not path.exists():
        raise ModelLoadError(f"no model at {uri}: no such directory")
    if not path.is_dir():
        raise ModelLoadError(f"{uri} is a file, not a model directory (save_pretrained output)")
    return path


def load_model(model_uri: str, device: str | None = "auto", dtype: str | None = "auto",
               cache_dir: str | os.PathLike | None = None):
    """``(model, tokenizer)`` from a ``save_pretrained`` directory (local path or ``s3://`` prefix).

    The directory must hold ``config.json`` + weights of a causal LM and the tokenizer files
    (the trainer's ``<out_uri>/model/``). S3 prefixes are downloaded first into the local
    cache (``store.local_cache_path``, ``$SEEDBED_CACHE``). Nothing is ever fetched from a hub.
    ``dtype="auto"`` keeps the checkpoint's dtype, except that half precision is upcast to
    float32 on CPU. The model is returned in eval mode on ``resolve_device(device)``.
    """
    import torch
    import transformers

    local = _local_model_dir(model_uri, cache_dir)
    if not (local / "config.json").is_file():
        raise ModelLoadError(
            f"{model_uri} is not a Hugging Face model directory: no config.json "
            f"(found {sorted(p.name for p in local.iterdir())[:10]})"
        )
    dev = resolve_device(device)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(local), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelLoadError(f"{model_uri}: cannot load the tokenizer saved with the model ({e})") from None
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(local), dtype=_torch_dtype(dtype, dev), local_files_only=True
        )
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{model_uri}: cannot load a causal LM from it ({type(e).__name__}: {e})") from None
    if dev == "cpu" and dtype in (None, "", "auto") and model.dtype in (torch.float16, torch.bfloat16):
        model = model.float()
    model.to(dev)
    model.eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# ----------------------------------------------------------------------------- windows


def _as_arrays(token_arrays: Mapping[str, Sequence[np.ndarray] | np.ndarray]) -> dict[str, list[np.ndarray]]:
    if not token_arrays:
        raise EvaluationError("no domains to evaluate: token_arrays is empty")
    out = {}
    for domain, arrays in token_arrays.items():
        if domain == ALL:
            raise EvaluationError(f"{ALL!r} is reserved for the pooled entry and cannot name a domain")
        if isinstance(arrays, np.ndarray):
            arrays = [arrays]
        arrs = []
        for a in arrays:
            a = np.asarray(a)
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise EvaluationError(f"{domain}: token arrays must be 1-D integer arrays, got {a.dtype} {a.shape}")
            arrs.append(a)
        out[domain] = arrs
    return out


def windows(arrays: Sequence[np.ndarray], seq_len: int, max_tokens: int | None = None) -> list[tuple[int, int, int]]:
    """The evaluation windows of one domain, as ``(array index, start, end)``.

    Non-overlapping ``seq_len``-token windows per array, in order, windows shorter than 2 tokens
    dropped, cut so that at most ``max_tokens`` tokens are read in all (module docstring).
    Both :func:`heldout_loss` and :func:`unigram_baseline` score exactly these windows.
    """
    if int(seq_len) < 2:
        raise EvaluationError(f"seq_len must be at least 2, got {seq_len}")
    if max_tokens is not None and int(max_tokens) < 2:
        raise EvaluationError(f"max_tokens must be at least 2 (or None), got {max_tokens}")
    seq_len = int(seq_len)
    budget = None if max_tokens is None else int(max_tokens)
    out = []
    for i, a in enumerate(arrays):
        n = len(a)
        for start in range(0, n, seq_len):
            end = min(start + seq_len, n)
            if budget is not None:
                end = min(end, start + budget)
            if end - start >= 2:
                out.append((i, start, end))
                if budget is not None:
                    budget -= end - start
            if budget is not None and budget < 2:
                return out
    return out


def _metrics(nll_sum: float, tokens: int, n_windows: int) -> dict:
    loss = nll_sum / tokens
    return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf"),
            "tokens": int(tokens), "windows": int(n_windows)}


def _pooled(per_domain: dict[str, dict], sums: dict[str, float]) -> dict:
    tokens = sum(m["tokens"] for m in per_domain.values())
    return _metrics(sum(sums.values()), tokens, sum(m["windows"] for m in per_domain.values()))


def _no_tokens(domain: str, arrays: Sequence[np.ndarray]) -> EvaluationError:
    return EvaluationError(
        f"domain {domain!r} has no held-out tokens to score ({len(arrays)} arrays, "
        f"{sum(len(a) for a in arrays)} tokens; a window needs at least 2): is its valid split empty?"
    )


# ----------------------------------------------------------------------------- model loss


def _model_vocab(model) -> int | None:
    cfg = getattr(model, "config", None)
    v = getattr(cfg, "vocab_size", None)
    try:
        emb = model.get_input_embeddings()
        v = emb.num_embeddings if emb is not None else v
    except (AttributeError, NotImplementedError):
        pass
    return v


def heldout_loss(model, token_arrays: Mapping[str, Sequence[np.ndarray] | np.ndarray], seq_len: int,
                 batch_size: int = 8, max_tokens: int | None = None, device: str | None = None) -> dict:
    """Per-domain mean next-token cross-entropy of ``model`` on held-out token arrays.

    ``token_arrays``: ``{domain: [1-D int arrays]}`` (e.g. ``ds.shards(domain, "valid")``).
    Returns ``{domain: {"loss", "ppl", "tokens", "windows"}, ..., "all": {...}}`` (see the module
    docstring for the windows and metrics). ``device`` defaults to the model's own device;
    full-length windows are batched ``batch_size`` at a time.
    """
    import torch
    import torch.nn.functional as F

    arrays = _as_arrays(token_arrays)
    if int(batch_size) < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and int(seq_len) > int(max_pos):
        raise EvaluationError(f"seq_len {seq_len} exceeds the model's max_position_embeddings {max_pos}")
    vocab = _model_vocab(model)
    dev = torch.device(device) if device else next(model.parameters()).device

    per_domain: dict[str, dict] = {}
    sums: dict[str, float] = {}
    was_training = model.training
    model.eval()
    try:
        for domain, arrs in arrays.items():
            wins = windows(arrs, seq_len, max_tokens)
            if not wins:
                raise _no_tokens(domain, arrs)
            if vocab is not None:
                for a in arrs:
                    if len(a) and int(a.max()) >= vocab:
                        raise EvaluationError(
                            f"domain {domain!r}: token id {int(a.max())} >= the model's vocabulary size {vocab} "
                            "(was this token dataset made with the model's tokenizer?)"
                        )
            # batches of equal-length windows (every full window, then each short tail alone)
            by_len: dict[int, list[tuple[int, int, int]]] = {}
            for w in wins:
                by_len.setdefault(w[2] - w[1], []).append(w)
            nll = 0.0
            scored = 0
            for length, group in sorted(by_len.items(), reverse=True):
                for b in range(0, len(group), int(batch_size)):
                    chunk = group[b:b + int(batch_size)]
                    ids = np.stack([np.asarray(arrs[i][s:e], dtype=np.int64) for i, s, e in chunk])
                    x = torch.from_numpy(ids).to(dev)
                    with torch.inference_mode():
                        logits = model(input_ids=x).logits
                        for r in range(len(chunk)):  # one row at a time: bounded float32 copy of the logits
                            nll += float(F.cross_entropy(logits[r, :-1].float(), x[r, 1:], reduction="sum"))
                    scored += len(chunk) * (length - 1)
            sums[domain] = nll
            per_domain[domain] = _metrics(nll, scored, len(wins))
    finally:
        model.train(was_training)
    return {**per_domain, ALL: _pooled(per_domain, sums)}


def heldout_loss_for_dataset(model, ds, seq_len: int, batch_size: int = 8, max_tokens: int | None = None,
                             domains: Iterable[str] | None = None, device: str | None = None) -> dict:
    """:func:`heldout_loss` on the ``valid`` split of a token dataset (``seedbed.train.tokens.open_tokens``)."""
    doms = list(domains) if domains is not None else list(ds.domains)
    return heldout_loss(model, {d: ds.shards(d, "valid") for d in doms}, seq_len,
                        batch_size=batch_size, max_tokens=max_tokens, device=device)


# ----------------------------------------------------------------------------- unigram


def unigram_counts(arrays: Iterable[np.ndarray], vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
    """Token counts (int64, length ``vocab_size``) over arrays, read ``chunk`` tokens at a time."""
    counts = np.zeros(int(vocab_size), dtype=np.int64)
    for a in arrays:
        for s in range(0, len(a), chunk):
            part = np.asarray(a[s:s + chunk])
            if len(part) and int(part.max()) >= vocab_size:
                raise EvaluationError(f"token id {int(part.max())} >= vocab_size {vocab_size}")
            counts += np.bincount(part, minlength=int(vocab_size)).astype(np.int64)
    return counts


def unigram_baseline(train_counts: np.ndarray | Mapping[str, np.ndarray],
                     token_arrays: Mapping[str, Sequence[np.ndarray] | np.ndarray], seq_len: int,
                     max_tokens: int | None = None) -> dict:
    """The :func:`heldout_loss` metrics for an add-one-smoothed unigram model, same positions.

    ``train_counts``: token counts of the train split (one array for every domain, or
    ``{domain: counts}`` for a per-domain unigram). Returns the same shape as
    :func:`heldout_loss`: ``{domain: {"loss", "ppl", "tokens", "windows"}, "all": {...}}``.
    """
    arrays = _as_arrays(token_arrays)

    def logp_of(domain):
        if isinstance(train_counts, Mapping) and domain not in train_counts:
            raise EvaluationError(f"no train counts for domain {domain!r}")
        c = train_counts[domain] if isinstance(train_counts, Mapping) else train_counts
        c = np.asarray(c, dtype=np.float64)
        if c.ndim != 1 or len(c) == 0 or (c < 0).any():
            raise EvaluationError("train_counts must be a 1-D array of non-negative counts")
        return np.log(c + 1.0) - math.log(c.sum() + len(c))

    per_domain: dict[str, dict] = {}
    sums: dict[str, float] = {}
    for domain, arrs in arrays.items():
        wins = windows(arrs, seq_len, max_tokens)
        if not wins:
            raise _no_tokens(domain, arrs)
        logp = logp_of(domain)
        nll = 0.0
        scored = 0
        for i, s, e in wins:
            targets = np.asarray(arrs[i][s + 1:e], dtype=np.int64)
            if int(targets.max()) >= len(logp):
                raise EvaluationError(f"domain {domain!r}: token id {int(targets.max())} >= len(train_counts) {len(logp)}")
            nll -= float(logp[targets].sum())
            scored += len(targets)
        sums[domain] = nll
        per_domain[domain] = _metrics(nll, scored, len(wins))
    return {**per_domain, ALL: _pooled(per_domain, sums)}


def unigram_baseline_for_dataset(ds, seq_len: int, max_tokens: int | None = None,
                                 domains: Iterable[str] | None = None,
                                 train_counts: np.ndarray | None = None) -> dict:
    """:func:`unigram_baseline` on a token dataset: counts from every domain's train split
    (unless given), scored on the ``valid`` split."""
    doms = list(domains) if domains is not None else list(ds.domains)
    if train_counts is None:
        train_counts = unigram_counts((a for d in ds.domains for a in ds.shards(d, "train")), ds.vocab_size)
    return unigram_baseline(train_counts, {d: ds.shards(d, "valid") for d in doms}, seq_len, max_tokens=max_tokens)


def default_cache_dir() -> Path:
    """Where downloaded models and temporary evaluation files go (``$SEEDBED_CACHE``)."""
    return Path(os.environ.get("SEEDBED_CACHE", Path(tempfile.gettempdir()) / "seedbed-cache"))
