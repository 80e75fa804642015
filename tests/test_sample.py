"""seedbed.betr.sample: bottom-k sampling by hashed id, on the real tiny pool."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from seedbed import corpus, data
from seedbed.betr import sample as S

SHARED = data.shared_data_dir()
pytestmark = pytest.mark.usefixtures("shared_data")  # missing data fails, never skips
POOL = str(SHARED / "tiny" / "pool_tiny.jsonl.gz") if SHARED else ""
POOL_DOCS = 1404


@pytest.fixture(scope="module")
def pool_records() -> list[dict]:
    return list(corpus.iter_corpus(POOL))


@pytest.fixture(scope="module")
def reshardings(tmp_path_factory, pool_records) -> list[corpus.Manifest]:
    """The tiny pool written with different shard sizes, in different orders."""
    root = tmp_path_factory.mktemp("pools")
    rng = random.Random(7)
    out = []
    for per_shard in (100, 333, POOL_DOCS):
        recs = list(pool_records)
        rng.shuffle(recs)  # documents in a different order within and across shards
        m = corpus.write_corpus(recs, str(root / f"p{per_shard}"), docs_per_shard=per_shard)
        shards = list(m.shards)
        rng.shuffle(shards)  # and the shards listed in a different order
        out.append(corpus.Manifest(shards, m.meta))
    return out


def _ids(m: corpus.Manifest) -> list[str]:
    return [r["id"] for r in corpus.iter_corpus(m)]


def test_same_seed_same_sample_whatever_the_sharding(tmp_path, reshardings):
    samples = [_ids(S.sample_corpus(POOL, 200, str(tmp_path / "orig"), seed=3))]
    for i, m in enumerate(reshardings):
        assert len(m.shards) in (15, 5, 1)
        samples.append(_ids(S.sample_corpus(m, 200, str(tmp_path / f"s{i}"), seed=3)))
    assert all(s == samples[0] for s in samples)  # identical ids in identical order
    assert len(samples[0]) == len(set(samples[0])) == 200


def test_sample_is_the_n_smallest_keys(tmp_path, pool_records):
    m = S.sample_corpus(POOL, 150, str(tmp_path / "s"), seed=11)
    got = list(corpus.iter_corpus(m))
    expected = sorted(pool_records, key=lambda r: (S.sample_key(11, r["id"]), r["id"]))[:150]
    assert got == expected  # all fields kept, ordered by key
    assert m.meta["n_sampled"] == 150 and m.meta["pool_docs"] == POOL_DOCS and not m.meta["took_all"]
    assert m.meta["read_stats"]["docs"] == POOL_DOCS


def test_different_seeds_differ(tmp_path):
    a = set(_ids(S.sample_corpus(POOL, 200, str(tmp_path / "a"), seed=0)))
    b = set(_ids(S.sample_corpus(POOL, 200, str(tmp_path / "b"), seed=1)))
    assert a != b
    assert len(a & b) < 70  # independent draws overlap by about 200*200/1404 ≈ 28


def test_sample_keeps_the_source_mix(tmp_path, pool_records):
    m = S.sample_corpus(POOL, 700, str(tmp_path / "s"), seed=5)
    share = sum(r["source"] == "wikipedia" for r in corpus.iter_corpus(m)) / m.docs
    pool_share = sum(r["source"] == "wikipedia" for r in pool_records) / len(pool_records)
    assert abs(share - pool_share) < 0.06  # uniform sample: about the pool's 71% Wikipedia


def test_n_larger_than_pool_takes_all(tmp_path):
    m = S.sample_corpus(POOL, 5000, str(tmp_path / "s"))
    assert m.docs == POOL_DOCS and m.meta["took_all"] and "exceeds" in m.meta["note"]


def test_duplicates_are_counted_and_skipped(tmp_path, pool_records):
    src = tmp_path / "dups"
    corpus.write_corpus(pool_records, str(src / "a"))
    dup = [dict(r, text="another copy: " + r["text"]) for r in pool_records[:50]]
    corpus.write_corpus(dup, str(src / "b"))
    m = S.sample_corpus(str(src), POOL_DOCS, str(tmp_path / "s"))
    ids = _ids(m)
    assert m.meta["duplicates"] == 50 and m.meta["pool_docs"] == POOL_DOCS
    assert len(ids) == len(set(ids)) == POOL_DOCS
    # the first copy read is the one kept ("a" is listed before "b")
    assert not any(r["text"].startswith("another copy: ") for r in corpus.iter_corpus(m))
    # counting only in-sample duplicates still never samples an id twice
    res = S.bottom_k(iter(dup + pool_records), 300, seed=2, count_all_duplicates=False)
    assert len({r["id"] for r in res.records}) == 300 and 0 < res.duplicates <= 50


def test_exclude_ids_draws_a_disjoint_sample(tmp_path):
    first = _ids(S.sample_corpus(POOL, 300, str(tmp_path / "a"), seed=0))
    m = S.sample_corpus(POOL, 300, str(tmp_path / "b"), seed=0, exclude_ids=first)
    second = _ids(m)
    assert not set(first) & set(second) and len(second) == 300
    assert m.meta["excluded"] == 300 and m.meta["params"]["exclude_ids"]["count"] == 300


def test_bad_inputs(tmp_path):
    for bad in (0, -3):
        with pytest.raises(ValueError, match="positive integer"):
            S.sample_corpus(POOL, bad, str(tmp_path / "s"))
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt") as f:
        f.write(json.dumps({"id": "x", "text": "  "}) + "\n")
    with pytest.raises(ValueError, match=f"{empty}.*no usable documents"):
        S.sample_corpus(str(empty), 10, str(tmp_path / "s2"))
    assert not (tmp_path / "s2" / "manifest.json").exists()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no shards"):
        S.sample_corpus(str(tmp_path / "nothing"), 10, str(tmp_path / "s3"))


def test_idempotent(tmp_path):
    out = str(tmp_path / "s")
    m1 = S.sample_corpus(POOL, 100, out, seed=4)
    ids1 = _ids(m1)
    m2 = S.sample_corpus(POOL, 100, out, seed=4)
    assert m2.to_dict() == m1.to_dict()
    with pytest.raises(ValueError, match="already holds a sample"):
        S.sample_corpus(POOL, 100, out, seed=5)
    m3 = S.sample_corpus(POOL, 100, out, seed=5, overwrite=True)
    assert _ids(m3) != ids1 and m3.meta["params"]["seed"] == 5


def test_rerun_after_interruption_touches_only_own_shards(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "part-00007.jsonl.gz").write_bytes(b"stale shard of an interrupted run")
    (out / "notes.jsonl.gz").write_bytes(b"not ours")
    m = S.sample_corpus(POOL, 100.0, str(out))  # an integral float n is accepted
    assert m.docs == 100 and m.meta["params"]["n"] == 100
    assert not (out / "part-00007.jsonl.gz").exists() and (out / "notes.jsonl.gz").exists()
