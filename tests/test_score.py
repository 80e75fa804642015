"""seedbed.betr.score: exact top-K, min rank, aggregation and labels, on real embeddings.

Real data: targets from ``tiny/benchmarks_tiny.jsonl.gz`` and documents from the tiny pool plus
the math / science / code domain samples, embedded once per module with the packaged
all-MiniLM-L6-v2 (truncated to 64 tokens to stay fast on CPU). Every check is against a brute
force computed independently (full similarity matrix in float64, full sorts).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from seedbed import corpus as sc
from seedbed.betr import embed, score
from seedbed.betr.score import ScoreError
from conftest import read_jsonl

MAX_LEN = 64
BENCHMARKS = ("gsm8k", "arc_easy", "sciq", "hellaswag", "mmlu", "piqa")
PER_BENCHMARK = 8



def _target_text(r: dict) -> str:
    ans = r.get("answer_text") or (r["choices"][r["answer"]] if r.get("choices") else str(r["answer"]))
    ctx = (r.get("context") + "\n") if r.get("context") else ""
    return f"{ctx}{r['question']}\n{ans}".strip()


@pytest.fixture(scope="module")
def data(tiny, tmp_path_factory):
    """Target and document corpora + their embeddings (written by embed_corpus) + brute-force sims."""
    root = tmp_path_factory.mktemp("score")
    rows = read_jsonl(tiny / "benchmarks_tiny.jsonl.gz")
    targets = []
    for b in BENCHMARKS:
        for r in [r for r in rows if r["benchmark"] == b][:PER_BENCHMARK]:
            targets.append({"id": f"{b}/{r['id']}", "text": _target_text(r), "benchmark": b})
    docs = read_jsonl(tiny / "pool_tiny.jsonl.gz", 240)
    for name, n in (("math", 60), ("science_abstracts", 50), ("code_python", 30)):
        docs += read_jsonl(tiny / "domains" / f"{name}.jsonl.gz", n)
    t_uri, d_uri = str(root / "targets"), str(root / "docs")
    sc.write_corpus(targets, t_uri)
    sc.write_corpus(docs, d_uri, docs_per_shard=200)
    model = embed.load_model(device="cpu", max_length=MAX_LEN)
    te = embed.embed_corpus(t_uri, str(root / "emb-t"), model=model, max_length=MAX_LEN, progress=False)
    de = embed.embed_corpus(d_uri, str(root / "emb-d"), model=model, max_length=MAX_LEN, progress=False,
                            docs_per_shard=150)
    t_ids, T = embed.load_embeddings(te)
    d_ids, X = embed.load_embeddings(de)
    sims = T.astype(np.float64) @ X.astype(np.float64).T
    # exact duplicate vectors would make "the" top-K ambiguous; the data has none
    assert len({x.tobytes() for x in X}) == len(X)
    return {
        "root": root, "targets": targets, "docs": docs, "t_uri": t_uri, "d_uri": d_uri,
        "te": te, "de": de, "t_ids": t_ids, "d_ids": d_ids, "T": T, "X": X, "sims": sims,
    }


def _brute_ranks(sims: np.ndarray) -> np.ndarray:
    """R[i, j] = rank of doc j for example i (1 = best), by a full stable sort."""
    order = np.argsort(-sims, axis=1, kind="stable")
    R = np.empty_like(order)
    np.put_along_axis(R, order, np.arange(1, sims.shape[1] + 1)[None, :].repeat(sims.shape[0], 0), axis=1)
    return R


def _assert_exact_topk(top: score.TopK, sims: np.ndarray, k: int):
    M, N = sims.shape
    k = min(k, N)
    ref = np.argsort(-sims, axis=1, kind="stable")
    assert top.values.shape == (M, k) and top.indices.shape == (M, k)
    for i in range(M):
        assert set(top.indices[i].tolist()) == set(ref[i, :k].tolist()), f"example {i}"
    np.testing.assert_allclose(top.values, np.take_along_axis(sims, top.indices, 1), atol=2e-6)
    assert (np.diff(top.values, axis=1) <= 0).all()  # best first
    np.testing.assert_allclose(top.best_cos, sims.max(0), atol=2e-6)


# ----------------------------------------------------------------------------- exact top-K


@pytest.mark.parametrize("k,chunk,width", [(1, None, None), (10, 64, 8), (37, 96, None), (256, 128, 16)])
def test_topk_equals_full_sort_on_real_embeddings(data, k, chunk, width):
    top = score.topk_per_example(data["T"], data["X"], k, chunk_size=chunk, candidate_width=width)
    _assert_exact_topk(top, data["sims"], k)


@pytest.mark.parametrize("dense_fraction", [0.0, 1.1])
def test_topk_both_candidate_filters_exact(data, monkeypatch, dense_fraction):
    # 0.0: every chunk filtered by one compare over S; 1.1: always through the group maxima
    monkeypatch.setattr(score, "_DENSE_GROUP_FRACTION", dense_fraction)
    calls = []
    real = score._insert
    monkeypatch.setattr(score, "_insert", lambda *a: (calls.append(1), real(*a)))
    top = score.topk_per_example(data["T"], data["X"], 5, chunk_size=32, candidate_width=4)
    assert calls, "the CPU threshold filter was not exercised"
    _assert_exact_topk(top, data["sims"], 5)


def test_topk_method_topk_and_float16_docs_exact(data):
    # the chunk-topk + merge path (the CUDA default) run on CPU; docs stay float16 as stored
    assert data["X"].dtype == np.float16
    top = score.topk_per_example(data["T"], data["X"], 12, chunk_size=64, method="topk")
    _assert_exact_topk(top, data["sims"], 12)
    with pytest.raises(ScoreError, match="unknown method"):
        score.topk_per_example(data["T"], data["X"], 12, method="fast")
    with pytest.raises(ScoreError, match="CUDA only"):
        score.topk_per_example(data["T"], data["X"], 12, device="cpu", dtype="float16")


def test_topk_many_chunks_random_unit_vectors():
    # many chunks, tiny buffers: dense start, whole-chunk filter, group filter, flushes, overflowing rows
    rng = np.random.default_rng(1)
    T = rng.standard_normal((40, 24)).astype(np.float32)
    X = rng.standard_normal((12000, 24)).astype(np.float32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sims = T.astype(np.float64) @ X.astype(np.float64).T
    for k, chunk, width in ((16, 256, 8), (100, 512, None), (3, 128, 1)):
        _assert_exact_topk(score.topk_per_example(T, X, k, chunk_size=chunk, candidate_width=width), sims, k)


def test_topk_clamps_k_and_validates(data):
    N = data["X"].shape[0]
    top = score.topk_per_example(data["T"], data["X"], N + 50)
    assert top.k == N
    _assert_exact_topk(top, data["sims"], N)
    with pytest.raises(ScoreError, match="no target examples"):
        score.topk_per_example(np.zeros((0, 384), np.float32), data["X"], 5)
    with pytest.raises(ScoreError, match="no documents"):
        score.topk_per_example(data["T"], np.zeros((0, 384), np.float16), 5)
    with pytest.raises(ScoreError, match="dimension"):
        score.topk_per_example(data["T"], data["X"][:, :100], 5)
    with pytest.raises(ScoreError, match="positive integer"):
        score.topk_per_example(data["T"], data["X"], 0)


# ----------------------------------------------------------------------------- min rank, aggregation


def test_min_rank_equals_brute_force(data):
    k = 20
    mr, best, top = score.min_rank_and_best_cos(data["T"], data["X"], k, chunk_size=64)
    R = _brute_ranks(data["sims"])
    ref = R.min(0)
    ref = np.where(ref <= k, ref, k + 1)
    np.testing.assert_array_equal(mr, ref)
    np.testing.assert_allclose(best, data["sims"].max(0), atol=2e-6)
    assert (mr == k + 1).any() and (mr == 1).sum() >= 1


def test_max_aggregation_is_v_of_min_rank_with_cosine_tiebreak(data):
    k = 20
    mr, best, _ = score.min_rank_and_best_cos(data["T"], data["X"], k)
    s, order = score.aggregate(mr, best, "max")
    R = _brute_ranks(data["sims"])
    # S_j = max_i v(r_ij) (brute force over every rank), capped at v(K+1) for docs outside all top-K
    brute = np.maximum((-np.log2(R.astype(np.float64))).max(0), -np.log2(k + 1))
    np.testing.assert_allclose(s, brute, atol=1e-12)
    # order: score descending, ties by best cosine descending
    so, bo = s[order], best[order]
    assert (np.diff(so) <= 0).all()
    same = np.diff(so) == 0
    assert same.any() and (np.diff(bo)[same] <= 0).all()
    assert sorted(order.tolist()) == list(range(len(mr)))


def test_tie_break_by_best_cosine_synthetic():
    mr = np.array([1, 1, 2, 2, 5, 5])
    best = np.array([0.30, 0.50, 0.90, 0.10, 0.99, 0.2])
    s, order = score.aggregate(mr, best, "max")
    assert order.tolist() == [1, 0, 2, 3, 4, 5]
    np.testing.assert_allclose(s, -np.log2(mr))
    s2, order2 = score.aggregate(mr, best, "mean", mean_score=np.array([-1.0, -1.0, -2.0, -0.5, -2.0, -3.0]))
    assert order2.tolist() == [3, 1, 0, 4, 2, 5]
    with pytest.raises(ScoreError, match="unknown aggregation"):
        score.aggregate(mr, best, "median")


def test_mean_aggregation_equals_numpy_brute_force(data):
    mean, mr, best = score.mean_log_rank(data["T"], data["X"], chunk_size=100, buffer_mb=1)
    R = _brute_ranks(data["sims"])
    ref = (-np.log2(R.astype(np.float64))).mean(0)
    diff = np.abs(mean - ref)
    # float32 vs float64 similarities may swap a near-tied pair of adjacent ranks: allow at most
    # a handful of such swaps (each moves a mean by |log2(r+1)-log2(r)|/M), nothing systematic
    assert (diff < 1e-9).mean() > 0.98, diff.max()
    assert diff.max() < 1.0 / len(data["T"]) + 1e-9
    np.testing.assert_array_equal(mr[diff < 1e-9], R.min(0)[diff < 1e-9])
    np.testing.assert_allclose(best, data["sims"].max(0), atol=2e-6)
    _, order = score.aggregate(mr, best, "mean", mean_score=mean)
    assert (np.diff(mean[order]) <= 0).all()


def test_mean_guard_refuses_too_many_pairs(data, tmp_path):
    M, N = len(data["T"]), len(data["X"])
    with pytest.raises(ScoreError, match=f"{M * N:,} pairs exceeds mean_max_pairs=100"):
        score.mean_log_rank(data["T"], data["X"], max_pairs=100)
    with pytest.raises(ScoreError, match="mean_max_pairs"):
        score.score_and_label(data["te"], data["de"], data["d_uri"], str(tmp_path / "o"), aggregation="mean",
                              mean_max_pairs=M * N - 1)
    assert not (tmp_path / "o" / "score.json").exists()


# ----------------------------------------------------------------------------- labels


def test_label_balance_and_determinism():
    rng = np.random.default_rng(0)
    order = rng.permutation(1000)
    lab = score.label(order, 10, seed=3)
    assert lab.n_positive == 100 and lab.n_negative == 900
    assert set(np.flatnonzero(lab.labels == 1)) == set(order[:100].tolist())
    assert lab.n_positive_kept == lab.n_negative_kept == 100 and lab.keep.sum() == 200
    assert lab.keep[order[:100]].all()
    again = score.label(order, 10, seed=3)
    assert np.array_equal(lab.keep, again.keep)
    other = score.label(order, 10, seed=4)
    assert not np.array_equal(lab.keep, other.keep) and np.array_equal(lab.labels, other.labels)
    # positives are the majority: they are the ones downsampled
    big = score.label(order, 80, seed=0)
    assert big.n_positive == 800 and big.n_negative_kept == 200 and big.n_positive_kept == 200
    assert score.label(np.array([2, 0, 1]), 1, seed=0).n_positive == 1  # at least one of each class
    for bad in (0, 100, -5, 150, float("nan"), "ten"):
        with pytest.raises(ScoreError, match="positive_pct"):
            score.label(order, bad)
    with pytest.raises(ScoreError, match="at least 2"):
        score.label(np.array([0]), 10)


# ----------------------------------------------------------------------------- the stage


def test_score_and_label_end_to_end(data, tmp_path):
    out = str(tmp_path / "score")
    k = 16
    res = score.score_and_label(data["te"], data["de"], data["d_uri"], out, top_k=k, positive_pct=10, seed=0,
                                chunk_size=64, n_top_matches_targets=4, n_matches=3)
    N, M = len(data["X"]), len(data["T"])
    assert res["n_docs"] == N and res["n_targets"] == M and res["top_k"] == k
    assert res["n_positive"] == round(N * 0.1) and res["n_negative"] == N - res["n_positive"]
    assert res["n_negative_kept"] == res["n_positive"]
    assert json.loads((tmp_path / "score" / "score.json").read_text()) == res

    with gzip.open(tmp_path / "score" / "labels.jsonl.gz", "rt") as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == 2 * res["n_positive"]
    assert sum(r["label"] for r in recs) == res["n_positive"]
    by_id = {d["id"]: d for d in data["docs"]}
    mr, best, _ = score.min_rank_and_best_cos(data["T"], data["X"], k)
    _, order = score.aggregate(mr, best)
    top_ids = {data["d_ids"][i] for i in order[: res["n_positive"]]}
    idx = {d: i for i, d in enumerate(data["d_ids"])}
    for r in recs:
        assert set(r) >= {"id", "text", "label", "score", "min_rank", "best_cos", "source"}
        assert r["text"] == by_id[r["id"]]["text"] and r["source"] == by_id[r["id"]]["source"]
        assert r["label"] == int(r["id"] in top_ids)
        assert r["min_rank"] == mr[idx[r["id"]]] and abs(r["best_cos"] - best[idx[r["id"]]]) < 1e-5
        assert r["score"] == pytest.approx(-np.log2(r["min_rank"]))
    labels = [r["label"] for r in recs]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)  # shuffled

    tm = json.loads((tmp_path / "score" / "top_matches.json").read_text())
    assert len(tm) == 4 and len({t["benchmark"] for t in tm}) == 4  # spread over benchmarks
    tgt = {t["id"]: t for t in data["targets"]}
    for t in tm:
        i = data["t_ids"].index(t["target_id"])
        assert t["target_text"] == tgt[t["target_id"]]["text"]
        ref = np.argsort(-data["sims"][i])[:3]
        assert [m["id"] for m in t["matches"]] == [data["d_ids"][j] for j in ref]
        for m, j in zip(t["matches"], ref):
            assert abs(m["cos"] - data["sims"][i, j]) < 1e-5 and m["text"] == data["docs"][j]["text"]

    # same params: returned as is, nothing rewritten; other params: refused; overwrite: redone
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "score").iterdir()}
    assert score.score_and_label(data["te"], data["de"], data["d_uri"], out, top_k=k, chunk_size=64,
                                 n_top_matches_targets=4, n_matches=3) == res
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "score").iterdir()} == mtimes
    with pytest.raises(ScoreError, match="already holds scores"):
        score.score_and_label(data["te"], data["de"], data["d_uri"], out, top_k=k, seed=1,
                              n_top_matches_targets=4, n_matches=3)
    res2 = score.score_and_label(data["te"], data["de"], data["d_uri"], out, top_k=k, seed=1,
                                 n_top_matches_targets=4, n_matches=3, overwrite=True)
    assert res2["params"]["seed"] == 1 and res2["n_positive"] == res["n_positive"]


def test_score_and_label_mean_and_clamped_k(data, tmp_path):
    N = len(data["X"])
    res = score.score_and_label(data["te"], data["de"], data["d_uri"], str(tmp_path / "m"), top_k=10_000,
                                aggregation="mean", positive_pct=25, n_top_matches_targets=2, n_matches=2)
    assert res["top_k"] == N and res["aggregation"] == "mean"
    assert res["n_positive"] == round(N * 0.25) and res["n_negative_kept"] == res["n_positive"]
    with gzip.open(tmp_path / "m" / "labels.jsonl.gz", "rt") as f:
        recs = [json.loads(line) for line in f]
    pos = [r["score"] for r in recs if r["label"] == 1]
    neg = [r["score"] for r in recs if r["label"] == 0]
    assert min(pos) >= max(neg)
    tm = json.loads((tmp_path / "m" / "top_matches.json").read_text())
    assert len(tm) == 2 and all(len(t["matches"]) == 2 for t in tm)


def test_score_and_label_bad_inputs(data, tmp_path):
    te, de = data["te"], data["de"]
    # duplicate document ids: the same shard listed twice
    dup = sc.Manifest(de.shards + de.shards[:1], meta=de.meta, kind="embeddings")
    with pytest.raises(ScoreError, match="duplicate ids"):
        score.score_and_label(te, dup, data["d_uri"], str(tmp_path / "a"))
    empty = sc.Manifest([], meta={"dim": 384}, kind="embeddings")
    with pytest.raises(ScoreError, match="no target examples"):
        score.score_and_label(empty, de, data["d_uri"], str(tmp_path / "b"))
    with pytest.raises(ScoreError, match="no documents"):
        score.score_and_label(te, empty, data["d_uri"], str(tmp_path / "c"))
    with pytest.raises(ScoreError, match="positive_pct"):
        score.score_and_label(te, de, data["d_uri"], str(tmp_path / "d"), positive_pct=100)
    with pytest.raises(ScoreError, match="aggregation"):
        score.score_and_label(te, de, data["d_uri"], str(tmp_path / "e"), aggregation="sum")
    other_model = sc.Manifest(te.shards, meta=dict(te.meta, model="some/other-model"), kind="embeddings")
    with pytest.raises(ScoreError, match="same model"):
        score.score_and_label(other_model, de, data["d_uri"], str(tmp_path / "f"))
    # the doc corpus must hold the embedded documents
    with pytest.raises(ScoreError, match="not in doc_corpus"):
        score.score_and_label(te, de, data["t_uri"], str(tmp_path / "g"))
    for sub in "abcdefg":
        assert not (tmp_path / sub / "score.json").exists()


def test_gsm8k_targets_pull_math_documents(data):
    """Sanity: the nearest documents of GSM8K word problems are math far above its base rate."""
    gi = [i for i, t in enumerate(data["t_ids"]) if t.startswith("gsm8k/")]
    top = score.topk_per_example(data["T"][gi], data["X"], 5)
    src = np.array([d["source"] for d in data["docs"]])
    is_math = src == "hendrycks_MATH"
    base = is_math.mean()
    hit = is_math[top.indices].mean()
    assert base < 0.2 and hit > 2 * base, (hit, base)
    # and science questions pull science abstracts or encyclopedic text more than math
    si = [i for i, t in enumerate(data["t_ids"]) if t.startswith(("sciq/", "arc_easy/"))]
    top_s = score.topk_per_example(data["T"][si], data["X"], 5)
    assert is_math[top_s.indices].mean() < hit
