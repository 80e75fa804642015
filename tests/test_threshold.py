"""Keep-rate thresholds (by tokens) and the bottom-k held-out sample, on real docs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from seedbed import corpus, store
from seedbed.betr import classifier as C
from seedbed.betr import sample as S
from seedbed.betr import threshold as T
from seedbed.text import count_tokens

from conftest import TINY, read_jsonl  # missing data fails the session fixture, never skips

FAST = {"bucket": 20_000, "dim": 32, "lr": 0.2, "epoch": 20}



@pytest.fixture(scope="module")
def model_uri(domain_classifier_uri) -> str:
    return domain_classifier_uri


@pytest.fixture(scope="module")
def pool_uri(tmp_path_factory) -> str:
    """The tiny pool + the domain docs (so the scores spread), as a 3-shard corpus."""
    recs = read_jsonl(TINY / "pool_tiny.jsonl.gz")
    for name in ("books_gutenberg", "code_python", "math", "science_abstracts"):
        recs += read_jsonl(TINY / "domains" / f"{name}.jsonl.gz")
    out = str(tmp_path_factory.mktemp("pool"))
    corpus.write_corpus(recs, out, docs_per_shard=800)
    return out


# ----------------------------------------------------------------------------- pure computation


def test_rule_smallest_top_prefix_reaching_p_percent_of_tokens():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    tokens = [10, 10, 30, 50, 100, 100, 200, 200, 100, 200]  # total 1000
    r = T.thresholds_for_keep_rates(scores, tokens, [1, 2, 5, 10, 30, 100])
    assert r["sample_docs"] == 10 and r["sample_tokens"] == 1000
    assert r["keep_rates"] == [1, 2, 5, 10, 30, 100]
    assert r["thresholds"] == {"1": 0.9, "2": 0.8, "5": 0.7, "10": 0.6, "30": 0.4, "100": 0.05}
    assert r["tokens_kept"] == {"1": 10, "2": 20, "5": 50, "10": 100, "30": 300, "100": 1000}
    assert r["docs_kept"]["30"] == 6
    # between two cut points the threshold moves to the next doc: at least p% is kept
    r = T.thresholds_for_keep_rates(scores, tokens, [3])
    assert r["thresholds"]["3"] == 0.7 and r["tokens_kept"]["3"] == 50
    # input order does not matter
    perm = list(range(10))
    random.Random(0).shuffle(perm)
    r2 = T.thresholds_for_keep_rates([scores[i] for i in perm], [tokens[i] for i in perm], [3])
    assert r2["thresholds"] == r["thresholds"]


def test_ties_at_the_threshold_are_all_kept():
    scores = [0.9, 0.5, 0.5, 0.5, 0.1]
    tokens = [100, 100, 100, 100, 100]
    r = T.thresholds_for_keep_rates(scores, tokens, [30])
    # the 30% point falls inside the tie at 0.5: the whole tie is kept (>= threshold)
    assert r["thresholds"]["30"] == 0.5
    assert r["docs_kept"]["30"] == 4 and r["tokens_kept"]["30"] == 400
    assert r["tokens_kept_pct"]["30"] == 80.0
    same = T.thresholds_for_keep_rates([0.3] * 4, [1, 2, 3, 4], [10, 50])
    assert same["docs_kept"] == {"10": 4, "50": 4}


@pytest.mark.parametrize("bad", [0, -1, 101, 100.0001, float("nan"), float("inf"), "10", True, None])
def test_invalid_keep_rates_raise_naming_the_value(bad):
    with pytest.raises(ValueError) as e:
        T.thresholds_for_keep_rates([0.5, 0.4], [1, 1], [10, bad])
    assert repr(bad) in str(e.value)


def test_other_invalid_inputs():
    with pytest.raises(ValueError, match="empty"):
        T.thresholds_for_keep_rates([0.5], [1], [])
    # repeats are dropped (order kept): e.g. the filter's rate appended to the report's list
    assert T.thresholds_for_keep_rates([0.5], [1], [10, 3, 10.0])["keep_rates"] == [10, 3]
    with pytest.raises(ValueError, match="differ in length"):
        T.thresholds_for_keep_rates([0.5, 0.2], [1], [10])
    with pytest.raises(ValueError, match="no tokens"):
        T.thresholds_for_keep_rates([0.5, 0.2], [0, 0], [10])
    with pytest.raises(ValueError, match="sample is empty"):
        T.thresholds_for_keep_rates([], [], [10])
    with pytest.raises(ValueError, match="NaN"):
        T.thresholds_for_keep_rates([0.5, float("nan")], [1, 1], [10])
    # floats that are whole numbers become ints (KFP passes list ints as floats)
    assert T.validate_keep_rates([3.0, 10, 2.5]) == [3, 10, 2.5]
    assert T.rate_key(2.5) == "2.5" and T.rate_key(3.0) == "3"


# ----------------------------------------------------------------------------- the stage


def test_compute_thresholds_on_real_docs(model_uri, pool_uri, tmp_path):
    out = str(tmp_path / "thr")
    res = T.compute_thresholds(model_uri, pool_uri, out, keep_rates=(3, 10, 30), sample_size=1500, seed=1)
    on_disk = store.read_json(store.join(out, "thresholds.json"))
    assert on_disk["thresholds"] == res["thresholds"]
    assert res["keep_rates"] == [3, 10, 30]
    assert res["sample_docs"] == 1500
    assert len(on_disk["score_sample"]) == 1500
    assert all(0.0 <= s <= 1.0 for s in on_disk["score_sample"])
    # thresholds decrease as the keep rate grows
    th = res["thresholds"]
    assert th["3"] >= th["10"] >= th["30"]

    # re-derive independently: score the same sample, apply each threshold, count tokens
    recs = list(corpus.iter_corpus(pool_uri))
    sample = S.bottom_k(recs, 1500, seed=1).records
    # the sample is a property of the set of docs, not of their order
    shuffled = recs[:]
    random.Random(5).shuffle(shuffled)
    assert [r["id"] for r in S.bottom_k(shuffled, 1500, seed=1).records] == [r["id"] for r in sample]
    clf = C.Classifier.load(model_uri)
    scores = clf.score([r["text"] for r in sample])
    tok = np.array([count_tokens(r["text"]) for r in sample])
    assert res["sample_tokens"] == int(tok.sum())
    biggest = tok.max() / tok.sum() * 100
    for p in (3, 10, 30):
        kept = scores >= th[str(p)]
        pct = tok[kept].sum() / tok.sum() * 100
        assert pct == pytest.approx(res["tokens_kept_pct"][str(p)])
        assert int(kept.sum()) == res["docs_kept"][str(p)]
        # at least p% of tokens, overshooting by at most one doc (no exact ties on real scores)
        assert p - 1e-9 <= pct <= p + biggest + 1e-9, (p, pct, biggest)


def test_compute_thresholds_is_idempotent(model_uri, pool_uri, tmp_path, monkeypatch):
    out = str(tmp_path / "thr")
    excl = {"c4-en-0849"}
    a = T.compute_thresholds(model_uri, pool_uri, out, sample_size=400, exclude_ids=excl)
    assert a["params"]["exclude_ids"]["n"] == 1 and a["sampling"]["excluded"] == 1

    def boom(*args, **kw):
        raise AssertionError("must not rescore")

    monkeypatch.setattr(C.Classifier, "score", boom)
    b = T.compute_thresholds(model_uri, pool_uri, out, sample_size=400, exclude_ids=excl)
    assert b == a
    with pytest.raises(ValueError, match="different params"):
        T.compute_thresholds(model_uri, pool_uri, out, sample_size=500, exclude_ids=excl)
    with pytest.raises(ValueError, match="different params"):
        T.compute_thresholds(model_uri, pool_uri, out, sample_size=400)
    monkeypatch.undo()
    c = T.compute_thresholds(model_uri, pool_uri, out, sample_size=500, overwrite=True)
    assert c["sample_docs"] == 500


def test_compute_thresholds_rejects_bad_arguments(model_uri, pool_uri, tmp_path):
    with pytest.raises(ValueError, match="keep rate 0"):
        T.compute_thresholds(model_uri, pool_uri, str(tmp_path), keep_rates=(0, 10))
    with pytest.raises(ValueError, match="sample_size"):
        T.compute_thresholds(model_uri, pool_uri, str(tmp_path), sample_size=0)
    assert not (tmp_path / "thresholds.json").exists()
