"""Sharded corpora: formats, manifests, ingest, malformed-line accounting — on real data."""

from __future__ import annotations

import gzip
import json

import pytest

from seedbed import corpus, store


def _pool_records(tiny, n=None):
    recs = list(corpus.iter_records(str(tiny / "pool_tiny.jsonl.gz")))
    return recs[:n] if n else recs


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_and_read_every_format(suffix, where, tiny, tmp_path, s3):
    recs = _pool_records(tiny, 300)
    prefix = str(tmp_path / "c") if where == "local" else f"s3://{s3}/c"
    m = corpus.write_corpus(recs, prefix, docs_per_shard=128, suffix=suffix, meta={"k": "v"})
    assert [s.docs for s in m.shards] == [128, 128, 44]
    assert all(s.uri.endswith(suffix) for s in m.shards)
    again = corpus.Manifest.load(prefix)
    assert again.docs == 300 and again.meta["k"] == "v"
    assert [r["id"] for r in corpus.iter_corpus(prefix)] == [r["id"] for r in recs]
    assert [r["text"] for r in corpus.iter_corpus(again)] == [r["text"] for r in recs]


def test_malformed_lines_are_counted_not_fatal(tiny, tmp_path):
    good = _pool_records(tiny, 5)
    lines = [json.dumps(r).encode() for r in good]
    lines += [
        b"{not json",
        b'{"text": "caf\xe9 in latin-1"}',  # invalid UTF-8
        b'{"id": "x1"}',  # no text
        b'{"id": "x2", "text": "   \\n "}',  # empty text
        b'["a", "list"]',  # not an object
        b"",  # blank lines are not documents and not errors
    ]
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    stats = corpus.ReadStats()
    out = list(corpus.iter_records(str(path), stats))
    assert [r["id"] for r in out] == [r["id"] for r in good]
    assert (stats.bad_json, stats.bad_utf8, stats.no_text, stats.empty_text) == (2, 1, 1, 1)
    assert stats.malformed == 5 and stats.docs == 5 and stats.lines == 10


def test_ingest_makes_stable_ids_and_skips_duplicates(tiny, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    texts = [r["text"] for r in _pool_records(tiny, 20)]
    # no ids at all, and the first doc twice: same content → same id → counted duplicate
    (src / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts + texts[:1]))
    m = corpus.ingest([str(src)], str(tmp_path / "out"), docs_per_shard=8, source_field_from_file=True)
    assert m.docs == 20
    assert m.meta["read_stats"]["duplicate_ids"] == 1
    recs = list(corpus.iter_corpus(m))
    assert recs[0]["id"] == corpus.stable_id(texts[0]) and recs[0]["source"] == "a"
    assert len({r["id"] for r in recs}) == 20
    # idempotent: same sources → same manifest, nothing rewritten
    mtime = (tmp_path / "out" / "manifest.json").stat().st_mtime_ns
    assert corpus.ingest([str(src)], str(tmp_path / "out"), docs_per_shard=8).docs == 20
    assert (tmp_path / "out" / "manifest.json").stat().st_mtime_ns == mtime
    # other sources into the same prefix is refused, not mixed
    with pytest.raises(corpus.CorpusError, match="already holds a corpus"):
        corpus.ingest([str(tiny / "pool_tiny.jsonl.gz")], str(tmp_path / "out"))


def test_ingest_bad_inputs(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(corpus.CorpusError, match="no usable documents"):
        corpus.ingest([str(empty)], str(tmp_path / "o1"))
    assert not (tmp_path / "o1" / "manifest.json").exists()
    with pytest.raises(store.NotFound):
        corpus.ingest([str(tmp_path / "missing.jsonl.gz")], str(tmp_path / "o2"))
    (tmp_path / "d").mkdir()
    with pytest.raises(corpus.CorpusError, match="no shards"):
        corpus.ingest([str(tmp_path / "d")], str(tmp_path / "o3"))
    with pytest.raises(corpus.CorpusError, match="docs_per_shard"):
        corpus.write_corpus([], str(tmp_path / "o4"), docs_per_shard=0)


def test_ingest_domains_prefix_from_s3(tiny, s3):
    # upload the real domain files to the bucket and ingest the prefix from S3 to S3
    for f in sorted((tiny / "domains").iterdir()):
        store.write_bytes(f"s3://{s3}/raw/{f.name}", f.read_bytes())
    m = corpus.ingest([f"s3://{s3}/raw"], f"s3://{s3}/corpus", docs_per_shard=300, suffix=".jsonl.zst")
    assert m.docs == 1000 and len(m.shards) == 4
    assert store.list_uris(f"s3://{s3}/corpus", suffixes=(".zst",)) == [s.uri for s in m.shards]


def test_truncated_gzip_is_a_corpus_error_naming_the_shard(tiny, tmp_path):
    data = (tiny / "pool_tiny.jsonl.gz").read_bytes()
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(corpus.CorpusError, match="cannot decompress .*cut.jsonl.gz"):
        list(corpus.iter_records(str(bad)))
    # an error of the caller's own inside the block is not disguised as a decompression error
    with pytest.raises(KeyError):
        with corpus.open_lines(str(tiny / "pool_tiny.jsonl.gz")) as lines:
            next(lines)
            raise KeyError("mine")


def test_corpus_or_ingest_uses_an_existing_corpus_in_place(tiny, tmp_path):
    first = corpus.corpus_or_ingest(str(tiny / "pool_tiny.jsonl.gz"), str(tmp_path / "a"), docs_per_shard=500)
    assert first == str(tmp_path / "a") and corpus.Manifest.load(first).docs == 1404
    # a corpus given as the source is not copied again
    assert corpus.corpus_or_ingest(first, str(tmp_path / "b")) == first
    assert not (tmp_path / "b").exists()
    # several sources (comma-separated, as pipelines pass them) are ingested together
    both = f"{tiny / 'pool_tiny.jsonl.gz'},{tiny / 'domains' / 'math.jsonl.gz'}"
    assert corpus.Manifest.load(corpus.corpus_or_ingest(both, str(tmp_path / "c"))).docs == 1604
