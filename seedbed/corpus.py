"""Sharded corpora on the object store.

A *corpus* is a prefix of shards plus a manifest (``manifest.json``) that lists every shard's
URI, document count and byte size. The manifest is written last, so a corpus without one is
incomplete by definition. Shards are JSON lines, optionally compressed: ``.jsonl``,
``.jsonl.gz`` (gzip) or ``.jsonl.zst`` (zstandard); every record has at least ``text`` and
``id``.

Reading is streaming and forgiving in a *counted* way: a malformed line (bad JSON, invalid
UTF-8, no ``text``, empty ``text``, not an object) never crashes a reader and never vanishes
silently, it is counted in :class:`ReadStats`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Iterable, Iterator

import orjson

from . import store

__all__ = [
    "SHARD_SUFFIXES",
    "ReadStats",
    "ShardInfo",
    "Manifest",
    "CorpusError",
    "open_lines",
    "iter_records",
    "ShardWriter",
    "write_corpus",
    "ingest",
    "corpus_or_ingest",
    "iter_corpus",
    "resolve_corpus",
    "stable_id",
    "list_shards",
]

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
MANIFEST_NAME = "manifest.json"


class CorpusError(ValueError):
    """Bad corpus input: the message names the file and the problem."""


def stable_id(text: str) -> str:
    """A content-derived id for records that come without one (same text → same id)."""
    return "doc-" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


# ----------------------------------------------------------------------------- reading


@dataclass
class ReadStats:
    lines: int = 0
    docs: int = 0
    bad_json: int = 0
    bad_utf8: int = 0
    no_text: int = 0
    empty_text: int = 0
    duplicate_ids: int = 0

    @property
    def malformed(self) -> int:
        return self.bad_json + self.bad_utf8 + self.no_text + self.empty_text

    def add(self, other: "ReadStats") -> "ReadStats":
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self

    def as_dict(self) -> dict:
        d = asdict(self)
        d["malformed"] = self.malformed
        return d


def _decompressed(raw: IO[bytes], uri: str) -> IO[bytes]:
    if uri.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if uri.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def list_shards(uri: str) -> list[str]:
    """Shard files at ``uri``: the file itself, or every ``.jsonl[.gz|.zst]`` under the prefix."""
    uri = str(uri)
    if uri.endswith(SHARD_SUFFIXES) and not uri.endswith("/"):
        if not store.exists(uri):
            raise store.NotFound(f"corpus shard {uri} does not exist")
        return [uri]
    shards = store.list_uris(uri, suffixes=SHARD_SUFFIXES)
    if not shards:
        raise CorpusError(f"no shards (*.jsonl, *.jsonl.gz, *.jsonl.zst) under {uri}")
    return shards


@contextlib.contextmanager
def open_lines(uri: str) -> Iterator[Iterator[bytes]]:
    """Yield an iterator over the raw (decompressed) lines of one shard, newline stripped.

    A corrupt or truncated compressed input raises :class:`CorpusError` naming the shard; errors
    raised by the caller's own code inside the block pass through unchanged.
    """
    raw = store.open_read(uri)
    if not isinstance(raw, io.BufferedIOBase) and not hasattr(raw, "peek"):
        raw = io.BufferedReader(raw, 1 << 20)
    stream = _decompressed(raw, uri)
    buffered = io.BufferedReader(stream, 1 << 20) if not isinstance(stream, io.BufferedReader) else stream

    def lines() -> Iterator[bytes]:
        it = iter(buffered)
        while True:
            try:
                line = next(it)
            except StopIteration:
                return
            except (OSError, EOFError) as e:  # zlib/zstd errors, truncated streams
                if isinstance(e, store.StoreError):
                    raise
                raise CorpusError(f"cannot decompress {uri}: {e}") from None
            yield line.rstrip(b"\r\n")

    try:
        yield lines()
    finally:
        with contextlib.suppress(Exception):
            buffered.close()
        with contextlib.suppress(Exception):
            raw.close()


def parse_line(line: bytes, stats: ReadStats, make_id: bool = True) -> dict | None:
    """Parse one JSONL line into a record, or count why it is malformed and return None."""
    if not line.strip():
        return None
    stats.lines += 1
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        stats.bad_utf8 += 1
        return None
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        stats.bad_json += 1
        return None
    if not isinstance(rec, dict):
        stats.bad_json += 1
        return None
    text = rec.get("text")
    if not isinstance(text, str):
        stats.no_text += 1
        return None
    if not text.strip():
        stats.empty_text += 1
        return None
    if make_id and not rec.get("id"):
        rec["id"] = stable_id(text)
    elif "id" in rec and not isinstance(rec["id"], str):
        rec["id"] = str(rec["id"])
    stats.docs += 1
    return rec


def iter_records(uri: str, stats: ReadStats | None = None) -> Iterator[dict]:
    """Stream the well-formed records of one shard; malformed lines are counted in ``stats``."""
    stats = stats if stats is not None else ReadStats()
    with open_lines(uri) as lines:
        for line in lines:
            rec = parse_line(line, stats)
            if rec is not None:
                yield rec


# ----------------------------------------------------------------------------- writing


class ShardWriter:
    """Write records to one shard, compressed by the URI's suffix, atomically on close.

    Use as a context manager; if the block raises, nothing appears at ``uri``.
    """

    def __init__(self, uri: str, level: int | None = None):
        if not uri.endswith(SHARD_SUFFIXES):
            raise CorpusError(f"shard name {uri} must end with one of {SHARD_SUFFIXES}")
        self.uri = uri
        self.docs = 0
        self.bytes_uncompressed = 0
        self._level = level
        self._cm = None
        self._raw = None
        self._out = None

    def __enter__(self) -> "ShardWriter":
        self._cm = store.open_write(self.uri)
        self._raw = self._cm.__enter__()
        if self.uri.endswith(".gz"):
            # mtime=0: identical input gives byte-identical shards (idempotent reruns)
            self._out = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6 if self._level is None else self._level, mtime=0)
        elif self.uri.endswith(".zst"):
            import zstandard

            self._out = zstandard.ZstdCompressor(level=3 if self._level is None else self._level).stream_writer(self._raw, closefd=False)
        else:
            self._out = self._raw
        return self

    def write(self, rec: dict) -> None:
        data = orjson.dumps(rec) + b"\n"
        self._out.write(data)
        self.docs += 1
        self.bytes_uncompressed += len(data)

    def write_many(self, recs: Iterable[dict]) -> None:
        for r in recs:
            self.write(r)

    def __exit__(self, exc_type, exc, tb):
        try:
            if self._out is not self._raw and exc_type is None:
                # closes the compressor only (gzip never closes fileobj; zstd has closefd=False)
                self._out.close()
        finally:
            return self._cm.__exit__(exc_type, exc, tb)


# ----------------------------------------------------------------------------- manifests


@dataclass
class ShardInfo:
    uri: str
    docs: int
    bytes: int
    meta: dict = field(default_factory=dict)


@dataclass
class Manifest:
    """The shards of a corpus (or of any sharded output) plus free-form metadata."""

    shards: list[ShardInfo]
    meta: dict = field(default_factory=dict)
    kind: str = "corpus"
    version: int = 1

    @property
    def docs(self) -> int:
        return sum(s.docs for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": self.version,
            "docs": self.docs,
            "bytes": self.bytes,
            "shards": [asdict(s) for s in self.shards],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        try:
            shards = [ShardInfo(**s) for s in d["shards"]]
        except (KeyError, TypeError) as e:
            raise CorpusError(f"not a seedbed manifest: {e}") from None
        return cls(shards=shards, meta=d.get("meta", {}), kind=d.get("kind", "corpus"), version=d.get("version", 1))

    def save(self, uri: str) -> None:
        store.write_json(uri, self.to_dict())

    @classmethod
    def load(cls, uri: str) -> "Manifest":
        if not uri.endswith(".json"):
            uri = store.join(uri, MANIFEST_NAME)
        return cls.from_dict(store.read_json(uri))


def resolve_corpus(uri: str) -> Manifest:
    """A manifest for ``uri``: the manifest file, a prefix holding ``manifest.json``, or bare shards."""
    uri = str(uri)
    if uri.endswith(".json"):
        return Manifest.load(uri)
    m = store.join(uri, MANIFEST_NAME)
    if not uri.endswith(SHARD_SUFFIXES) and store.exists(m):
        return Manifest.load(m)
    shards = list_shards(uri)
    return Manifest([ShardInfo(u, docs=-1, bytes=store.size(u)) for u in shards], meta={"source": uri})


def iter_corpus(corpus: Manifest | str, stats: ReadStats | None = None) -> Iterator[dict]:
    m = corpus if isinstance(corpus, Manifest) else resolve_corpus(corpus)
    for s in m.shards:
        yield from iter_records(s.uri, stats)


def shard_name(i: int, suffix: str = ".jsonl.gz") -> str:
    return f"part-{i:05d}{suffix}"


def write_corpus(
    records: Iterable[dict],
    prefix: str,
    docs_per_shard: int = 100_000,
    suffix: str = ".jsonl.gz",
    meta: dict | None = None,
) -> Manifest:
    """Write ``records`` as shards ``prefix/part-NNNNN<suffix>`` and then ``prefix/manifest.json``."""
    if docs_per_shard <= 0:
        raise CorpusError(f"docs_per_shard must be positive, got {docs_per_shard}")
    if suffix not in SHARD_SUFFIXES:
        raise CorpusError(f"unknown shard format {suffix!r}; use one of {SHARD_SUFFIXES}")
    shards: list[ShardInfo] = []
    it = iter(records)
    i = 0
    exhausted = False
    while not exhausted:
        uri = store.join(prefix, shard_name(i, suffix))
        w = ShardWriter(uri)
        with w:
            for rec in it:
                w.write(rec)
                if w.docs >= docs_per_shard:
                    break
            else:
                exhausted = True
        if w.docs == 0:
            store.delete(uri)
            break
        shards.append(ShardInfo(uri, w.docs, store.size(uri)))
        i += 1
    m = Manifest(shards, meta=dict(meta or {}, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    m.save(store.join(prefix, MANIFEST_NAME))
    return m


def ingest(
    sources: list[str] | str,
    prefix: str,
    docs_per_shard: int = 100_000,
    suffix: str = ".jsonl.gz",
    source_field_from_file: bool = False,
    overwrite: bool = False,
) -> Manifest:
    """Ingest jsonl(.gz/.zst) files or prefixes into a sharded corpus with a manifest.

    Records need ``text``; a missing ``id`` is made stable from the content. Duplicate ids
    (after the first) and malformed lines are skipped and counted in ``manifest.meta``.
    With ``source_field_from_file`` a record without ``source`` gets its file's stem
    (e.g. ``math`` for ``domains/math.jsonl.gz``), so reports can show where a doc came from.
    An existing complete corpus at ``prefix`` is returned as is unless ``overwrite``.
    """
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise CorpusError("ingest needs at least one source file or prefix")
    manifest_uri = store.join(prefix, MANIFEST_NAME)
    if not overwrite and store.exists(manifest_uri):
        m = Manifest.load(manifest_uri)
        if m.meta.get("sources") == list(sources):
            return m
        raise CorpusError(
            f"{prefix} already holds a corpus ingested from {m.meta.get('sources')}; "
            "choose another output prefix or pass overwrite"
        )
    files = [f for s in sources for f in list_shards(s)]
    stats = ReadStats()
    seen: set[bytes] = set()

    def records() -> Iterator[dict]:
        for f in files:
            stem = store.basename(f).split(".")[0]
            for rec in iter_records(f, stats):
                key = hashlib.blake2b(rec["id"].encode(), digest_size=8).digest()
                if key in seen:
                    stats.duplicate_ids += 1
                    stats.docs -= 1
                    continue
                seen.add(key)
                if source_field_from_file and not rec.get("source"):
                    rec["source"] = stem
                yield rec

    if overwrite:
        for old in store.list_uris(prefix, suffixes=SHARD_SUFFIXES) if store.exists_prefix(prefix) else []:
            store.delete(old)
    m = write_corpus(records(), prefix, docs_per_shard, suffix, meta={"sources": list(sources)})
    if m.docs == 0:
        store.delete(manifest_uri)
        raise CorpusError(
            f"no usable documents in {sources}: {stats.lines} lines read, "
            f"{stats.malformed} malformed ({stats.as_dict()})"
        )
    m.meta["read_stats"] = stats.as_dict()
    m.save(manifest_uri)
    return m


def corpus_or_ingest(sources: list[str] | str, prefix: str, docs_per_shard: int = 100_000, **kw) -> str:
    """The URI of a corpus holding ``sources``: a single source that already is a seedbed corpus
    (has ``manifest.json``) is used in place, anything else is ingested into ``prefix``.

    ``sources`` may be a list or a comma-separated string (the form pipelines pass).
    """
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    if len(sources) == 1 and not sources[0].endswith(SHARD_SUFFIXES) and store.exists(store.join(sources[0], MANIFEST_NAME)):
        return sources[0]
    ingest(sources, prefix, docs_per_shard=docs_per_shard, **kw)
    return prefix


_OWN_SHARD = re.compile(r"part-\d{5}\.jsonl(\.gz|\.zst)?")


def reuse_finished(uri: str, params: dict, overwrite: bool, what: str, error=CorpusError,
                   params_of=lambda done: done.get("params")) -> dict | None:
    """The idempotency rule of every stage (docs/stage-contracts.md), for its last-written JSON file.

    Returns the file's content when it was written with the same ``params`` (the stage is done);
    raises ``error`` when it was written with other params, unless ``overwrite``, in which case
    the file is deleted first (from then on the stage counts as unfinished); returns None when
    there is nothing finished at ``uri``.
    """
    if not store.exists(uri):
        return None
    done = store.read_json(uri)
    if overwrite:
        store.delete(uri)
        return None
    if params_of(done) == params:
        return done
    raise error(
        f"{uri} already holds {what} made with different params {params_of(done)} (now {params}); "
        "choose another output prefix or pass overwrite=True"
    )


def reuse_or_clear(out_prefix: str, params: dict, overwrite: bool, what: str, error=CorpusError) -> Manifest | None:
    """:func:`reuse_finished` for a corpus written by :func:`write_corpus`.

    Returns the finished corpus at ``out_prefix`` when its ``meta["params"]`` equal ``params``.
    Otherwise clears stale ``part-NNNNN.*`` shards directly under the prefix (an interrupted or
    overwritten run: nothing else is touched, so a mistaken prefix cannot wipe other data) and
    returns None.
    """
    done = reuse_finished(store.join(out_prefix, MANIFEST_NAME), params, overwrite, what, error,
                          params_of=lambda d: d.get("meta", {}).get("params"))
    if done is not None:
        return Manifest.from_dict(done)
    if store.exists_prefix(out_prefix):
        for old in store.list_uris(out_prefix, suffixes=SHARD_SUFFIXES):
            if _OWN_SHARD.fullmatch(store.basename(old)) and store.parent(old).rstrip("/") == str(out_prefix).rstrip("/"):
                store.delete(old)
    return None
