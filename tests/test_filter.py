"""BETR filter: per-shard filtering, markers, crash safety, merge, and S3 (moto over HTTP).

Real data: the tiny web pool (1,404 docs with ``source``) sharded into gzip shards, plus one
shard of real docs with malformed lines appended. The classifier is a real fastText model
(math + science abstracts vs Wikipedia + web pool).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from seedbed import corpus, store
from seedbed.betr import classifier as C
from seedbed.betr import filter as F
from seedbed.text import count_tokens, normalize

from conftest import TINY, read_jsonl  # missing data fails the session fixture, never skips

FAST = {"bucket": 20_000, "dim": 32, "lr": 0.2, "epoch": 20}

# appended to a shard of real docs: (line, which counter it must increase)
MALFORMED = [
    (b'{"id": "bad-1", "text": "unterminated', "bad_json"),
    (b"[1, 2, 3]", "bad_json"),
    (b'{"id": "utf-1", "text": "caf\xe9 \xff\xfe broken"}', "bad_utf8"),
    (b'{"id": "nt-1", "title": "a record without text"}', "no_text"),
    (b'{"id": "nt-2", "text": 42}', "no_text"),
    (b'{"id": "et-1", "text": ""}', "empty_text"),
    (b'{"id": "et-2", "text": " \\n\\t "}', "empty_text"),
]
N_EXTRA = 60  # real docs in the malformed shard



@pytest.fixture(scope="module")
def model_uri(domain_classifier_uri) -> str:
    return domain_classifier_uri


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict:
    """Tiny pool as 3 gzip shards + 1 zstd shard of real docs with malformed lines appended."""
    root = tmp_path_factory.mktemp("pool")
    recs = read_jsonl(TINY / "pool_tiny.jsonl.gz")
    extra = read_jsonl(TINY / "domains" / "math.jsonl.gz")[:N_EXTRA // 2] + read_jsonl(TINY / "domains" / "code_python.jsonl.gz")[: N_EXTRA // 2]
    m = corpus.write_corpus(recs, str(root / "pool"), docs_per_shard=500)
    assert len(m.shards) == 3
    import zstandard

    bad = root / "pool" / "part-00003.jsonl.zst"
    lines = [orjson.dumps(dict(r, source="domains")) for r in extra]
    lines[10:10] = [line for line, _ in MALFORMED[:3]]  # malformed lines in the middle ...
    lines += [line for line, _ in MALFORMED[3:]] + [b""]  # ... and at the end (+ a blank line)
    bad.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
    m.shards.append(corpus.ShardInfo(str(bad), docs=N_EXTRA, bytes=bad.stat().st_size))
    m.save(str(root / "pool" / "manifest.json"))
    docs = recs + [dict(r, source="domains") for r in extra]
    return {"uri": str(root / "pool"), "docs": docs, "shards": [s.uri for s in m.shards]}


@pytest.fixture(scope="module")
def scored(model_uri, pool) -> dict:
    clf = C.Classifier.load(model_uri)
    scores = clf.score([d["text"] for d in pool["docs"]])
    return {"scores": scores, "threshold": float(np.quantile(scores, 0.6))}


def _expected_malformed() -> dict:
    out = {"bad_json": 0, "bad_utf8": 0, "no_text": 0, "empty_text": 0}
    for _, k in MALFORMED:
        out[k] += 1
    return out


def _lines(uri: str) -> list[dict]:
    with corpus.open_lines(uri) as it:
        return [orjson.loads(line) for line in it if line]


def _visible(prefix: Path) -> list[str]:
    return sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- helpers


def test_normalizer_and_token_count_identities_on_real_docs(pool):
    # the filter counts tokens as normalized.count(" ") + 1: equal to count_tokens(raw)
    for d in pool["docs"]:
        n = normalize(d["text"])
        assert "\n" not in n
        assert n.count(" ") + 1 == count_tokens(d["text"])
        # the regex normalizer equals the (faster) split/join form — see the benchmark notes
        assert n == " ".join(d["text"].split())


def test_output_names_are_deterministic_and_unique(tmp_path):
    a = F.output_name("s3://b/x/part-00000.jsonl.gz")
    assert a == F.output_name("s3://b/x/part-00000.jsonl.gz")
    assert a.startswith("part-00000-") and len(a) == len("part-00000-") + 8
    assert a != F.output_name("s3://b/y/part-00000.jsonl.gz")
    assert F.output_name("/d/part-00001.jsonl.zst").startswith("part-00001-")
    assert F.output_name(str(tmp_path / "p.jsonl")) == F.output_name("file://" + str(tmp_path / "p.jsonl"))


def test_plan_filter_lists_the_pool_shards(pool):
    assert F.plan_filter(pool["uri"]) == pool["shards"]
    assert F.plan_filter(corpus.Manifest.load(pool["uri"])) == pool["shards"]
    assert F.plan_filter(pool["shards"][3]) == [pool["shards"][3]]


# ----------------------------------------------------------------------------- filtering


def test_filter_corpus_counts_keeps_and_writes_exactly(model_uri, pool, scored, tmp_path):
    t = scored["threshold"]
    out = tmp_path / "out"
    m = F.filter_corpus(model_uri, pool["uri"], str(out), t, keep_rate=40)
    tot = m.meta["totals"]
    docs, scores = pool["docs"], scored["scores"]
    keep = scores >= t
    assert tot["docs_in"] == len(docs) == 1404 + N_EXTRA
    assert tot["docs_kept"] == int(keep.sum()) == m.docs
    exp = _expected_malformed()
    assert {k: tot[k] for k in exp} == exp
    assert tot["malformed"] == len(MALFORMED)
    ntok = np.array([count_tokens(d["text"]) for d in docs])
    assert tot["tokens_in"] == int(ntok.sum())
    assert tot["tokens_kept"] == int(ntok[keep].sum())
    assert m.meta["threshold"] == t and m.meta["keep_rate"] == 40
    assert m.meta["params"]["threshold"] == t

    # by_source sums and matches the input
    bs = m.meta["by_source"]
    assert sum(v["docs_in"] for v in bs.values()) == tot["docs_in"]
    assert sum(v["docs_kept"] for v in bs.values()) == tot["docs_kept"]
    assert bs["domains"]["docs_in"] == N_EXTRA and bs["wikipedia"]["docs_in"] == 997

    # the manifest on disk, one output per input, true doc counts, totals = sum of stats
    on_disk = corpus.Manifest.load(str(out))
    assert on_disk.to_dict() == m.to_dict()
    assert len(m.shards) == 4
    stats = [store.read_json(u) for u in store.list_uris(str(out / "_stats"))]
    for k in tot:
        assert tot[k] == sum(s[k] for s in stats)
    by_id = {d["id"]: (d, s) for d, s in zip(docs, scores)}
    kept_ids = []
    for sh in m.shards:
        recs = _lines(sh.uri)
        assert len(recs) == sh.docs and store.size(sh.uri) == sh.bytes
        for r in recs:
            orig, s = by_id[r["id"]]
            score = r.pop("betr_score")
            assert score >= t and score == pytest.approx(s, abs=1e-12)
            assert r == orig  # the original record, untouched
            kept_ids.append(r["id"])
    assert sorted(kept_ids) == sorted(d["id"] for d, k in zip(docs, keep) if k)
    # the output is a corpus the next stage can read
    assert sum(1 for _ in corpus.iter_corpus(str(out))) == tot["docs_kept"]


def test_rerun_skips_finished_shards_and_param_change_is_refused(model_uri, pool, scored, tmp_path, monkeypatch):
    t = scored["threshold"]
    out = str(tmp_path / "out")
    first = F.filter_shard(model_uri, pool["shards"][0], out, t)
    monkeypatch.setattr(C.Classifier, "score_normalized", lambda *a, **k: pytest.fail("rescored a finished shard"))
    assert F.filter_shard(model_uri, pool["shards"][0], out, t) == first
    with pytest.raises(F.FilterError, match="different params"):
        F.filter_shard(model_uri, pool["shards"][0], out, t + 0.01)
    monkeypatch.undo()
    again = F.filter_shard(model_uri, pool["shards"][0], out, t + 0.01, overwrite=True)
    assert again["threshold"] == t + 0.01 and again["docs_kept"] <= first["docs_kept"]
    assert again["output_shard"] == first["output_shard"]


def test_crash_midway_leaves_nothing_finished_and_rerun_completes(model_uri, pool, scored, tmp_path, monkeypatch):
    shard = pool["shards"][0]  # 500 docs
    out = tmp_path / "out"
    real = C.Classifier.score_normalized
    calls = {"n": 0}

    def flaky(self, texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash in the 2nd batch")
        return real(self, texts)

    monkeypatch.setattr(C.Classifier, "score_normalized", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        F.filter_shard(model_uri, shard, str(out), 0.0, batch_size=100)  # 0.0: batch 1 was written
    assert calls["n"] == 2
    # no marker, no output shard, not even a temp file
    assert not list(out.rglob("*.json")) and _visible(out) == []
    with pytest.raises(F.FilterError, match="no finished"):
        F.merge_filter_outputs(str(out))
    monkeypatch.undo()
    stats = F.filter_shard(model_uri, shard, str(out), 0.0, batch_size=100)
    assert stats["docs_in"] == stats["docs_kept"] == 500
    assert len(_lines(stats["output_shard"])) == 500


def test_empty_outputs_both_ways(model_uri, pool, tmp_path):
    shards = pool["shards"][:2]
    out = tmp_path / "empty"
    for s in shards:
        st = F.filter_shard(model_uri, s, str(out), 1.5)  # nothing scores above 1
        assert st["docs_kept"] == 0 and st["output_shard"]
        assert _lines(st["output_shard"]) == []
    m = F.merge_filter_outputs(str(out), threshold=1.5)
    assert len(m.shards) == 2 and m.docs == 0 and all(s.docs == 0 for s in m.shards)

    out2 = tmp_path / "noempty"
    st = F.filter_shard(model_uri, shards[0], str(out2), 1.5, write_empty=False)
    assert st["output_shard"] is None and st["docs_in"] == 500
    assert _visible(out2) == [f"_stats/{st['name']}.json"]
    m2 = F.merge_filter_outputs(str(out2))
    assert m2.shards == [] and m2.meta["totals"]["docs_in"] == 500

    # overwrite from "kept some" to "kept none" with write_empty=False removes the stale output
    F.filter_shard(model_uri, shards[1], str(out2), 0.0, write_empty=False)
    F.filter_shard(model_uri, shards[1], str(out2), 1.5, write_empty=False, overwrite=True)
    assert [p for p in _visible(out2) if p.endswith(".jsonl.gz")] == []


def test_merge_checks_consistency(model_uri, pool, scored, tmp_path):
    out = str(tmp_path / "out")
    t = scored["threshold"]
    F.filter_shard(model_uri, pool["shards"][0], out, t)
    with pytest.raises(F.FilterError, match="not finished"):
        F.merge_filter_outputs(out, expected_inputs=pool["shards"][:2])
    with pytest.raises(F.FilterError, match="filtered at threshold"):
        F.merge_filter_outputs(out, threshold=t + 0.1)
    F.filter_shard(model_uri, pool["shards"][1], out, t + 0.1)
    with pytest.raises(F.FilterError, match="different thresholds"):
        F.merge_filter_outputs(out)


def test_bad_arguments(model_uri, pool, tmp_path):
    with pytest.raises(F.FilterError, match="threshold"):
        F.filter_shard(model_uri, pool["shards"][0], str(tmp_path), float("nan"))
    with pytest.raises(F.FilterError, match="not a shard"):
        F.filter_shard(model_uri, str(tmp_path / "x.txt"), str(tmp_path), 0.5)
    with pytest.raises(F.FilterError, match="compresslevel"):
        F.filter_shard(model_uri, pool["shards"][0], str(tmp_path), 0.5, compresslevel=0)
    trunc = tmp_path / "trunc.jsonl.gz"
    trunc.write_bytes(Path(pool["shards"][0]).read_bytes()[:5000])
    with pytest.raises(corpus.CorpusError):
        F.filter_shard(model_uri, str(trunc), str(tmp_path / "o"), 0.5)
    assert not (tmp_path / "o" / "_stats").exists()


def test_process_pool_matches_sequential(model_uri, pool, scored, tmp_path):
    t = scored["threshold"]
    seq = F.filter_corpus(model_uri, pool["uri"], str(tmp_path / "seq"), t)
    par = F.filter_corpus(model_uri, pool["uri"], str(tmp_path / "par"), t, workers=2)
    assert par.meta["totals"] == seq.meta["totals"]
    assert par.meta["by_source"] == seq.meta["by_source"]
    assert [s.docs for s in par.shards] == [s.docs for s in seq.shards]


# ----------------------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_REGION", "us-east-1")
    mp.setenv("AWS_MAX_ATTEMPTS", "2")
    mp.delenv("AWS_PROFILE", raising=False)
    mp.setenv("SEEDBED_CACHE", str(tmp_path_factory.mktemp("s3cache")))
    store._client().create_bucket(Bucket="seedbed-test")
    try:
        yield "s3://seedbed-test"
    finally:
        mp.undo()
        server.stop()


def test_filter_on_s3_matches_local(s3, model_uri, pool, scored, tmp_path, monkeypatch):
    t = scored["threshold"]
    s3_model = f"{s3}/betr/model/model.bin"
    store.write_bytes(s3_model, Path(model_uri).read_bytes())
    s3_pool = f"{s3}/pool"
    for sh in pool["shards"]:
        store.write_bytes(store.join(s3_pool, store.basename(sh)), Path(sh).read_bytes())
    out = f"{s3}/betr/filtered"

    # a crash on S3 leaves no object behind (the upload never completes)
    real = C.Classifier.score_normalized
    calls = {"n": 0}

    def flaky(self, texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(self, texts)

    monkeypatch.setattr(C.Classifier, "score_normalized", flaky)
    with pytest.raises(RuntimeError):
        F.filter_shard(s3_model, f"{s3_pool}/part-00000.jsonl.gz", out, 0.0, batch_size=100)
    assert not store.exists_prefix(out)
    monkeypatch.undo()

    m = F.filter_corpus(s3_model, s3_pool, out, t, keep_rate=40)
    local = F.filter_corpus(model_uri, pool["uri"], str(tmp_path / "local"), t, keep_rate=40)
    assert m.meta["totals"] == local.meta["totals"]
    assert m.meta["by_source"] == local.meta["by_source"]
    assert all(s.uri.startswith(out + "/") for s in m.shards)
    assert corpus.Manifest.load(out).to_dict() == m.to_dict()
    assert sum(1 for _ in corpus.iter_corpus(out)) == m.meta["totals"]["docs_kept"]
    assert len(store.list_uris(f"{out}/_stats")) == 4
    # rerun: every shard is skipped via its marker
    monkeypatch.setattr(C.Classifier, "score_normalized", lambda *a, **k: pytest.fail("rescored"))
    assert F.filter_corpus(s3_model, s3_pool, out, t, keep_rate=40).meta["totals"] == m.meta["totals"]
