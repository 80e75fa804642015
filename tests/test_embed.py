"""seedbed.betr.embed on real data with the real packaged all-MiniLM-L6-v2 (CPU).

Kept fast: the model is loaded once per module, texts are truncated to 48 tokens and only a
few hundred documents of the tiny pool are embedded.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from seedbed import corpus as sc
from seedbed import store
from seedbed.betr import embed
from seedbed.betr.embed import EmbedError
from conftest import read_jsonl

MAX_LEN = 48



@pytest.fixture(scope="module")
def model():
    return embed.load_model("default", device="cpu", max_length=MAX_LEN)


@pytest.fixture(scope="module")
def pool_docs(tiny) -> list[dict]:
    return read_jsonl(tiny / "pool_tiny.jsonl.gz", 160)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, pool_docs) -> str:
    prefix = str(tmp_path_factory.mktemp("corpus") / "docs")
    sc.write_corpus(pool_docs[:120], prefix, docs_per_shard=70)  # input shards != output shards
    return prefix


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, small_corpus, model):
    out = str(tmp_path_factory.mktemp("emb") / "out")
    m = embed.embed_corpus(small_corpus, out, model=model, max_length=MAX_LEN, docs_per_shard=50,
                           batch_size=16, progress=False)
    return out, m


class CountingEncode:
    """Wraps model.encode: records the number of texts of every call, optionally fails on call N."""

    def __init__(self, model, fail_on_call: int | None = None):
        self.model = model
        self.orig = model.encode
        self.calls: list[int] = []
        self.fail_on_call = fail_on_call

    def __call__(self, texts, *a, **kw):
        self.calls.append(len(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash")
        return self.orig(texts, *a, **kw)


# ----------------------------------------------------------------------------- load_model


def test_load_model_default_is_packaged_minilm_on_cpu(model):
    p = next(model.parameters())
    assert str(p.device) == "cpu" and str(p.dtype) == "torch.float32"
    assert embed._model_dim(model) == 384
    assert model.max_seq_length == MAX_LEN
    assert embed.model_ref(model) == "sentence-transformers/all-MiniLM-L6-v2"
    assert embed.load_model().max_seq_length == 256  # the model's own when not set


def test_load_model_rejects_bad_settings():
    with pytest.raises(EmbedError, match="float16"):
        embed.load_model(device="cpu", dtype="float16")
    with pytest.raises(EmbedError, match="unknown dtype"):
        embed.load_model(device="cpu", dtype="float8")
    with pytest.raises(EmbedError, match="max_length"):
        embed.load_model(device="cpu", max_length=0)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(EmbedError, match="CUDA is not available"):
            embed.load_model(device="cuda")
    assert embed.resolve_dtype("auto", "cpu") == torch.float32
    assert embed.resolve_dtype("auto", "cuda") == torch.float16
    assert embed.resolve_dtype("bf16", "cuda") == torch.bfloat16


def test_available_cpus_respects_affinity():
    n = embed.available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


# ----------------------------------------------------------------------------- embed_corpus


def test_shards_ids_and_vectors_are_aligned(embedded, pool_docs, model):
    out, m = embedded
    assert m.kind == "embeddings"
    assert [s.docs for s in m.shards] == [50, 50, 20]
    names = sorted(p.name for p in Path(out).iterdir())
    assert names == ["emb-00000.npy", "emb-00001.npy", "emb-00002.npy",
                     "ids-00000.json", "ids-00001.json", "ids-00002.json", "manifest.json"]
    meta = m.meta
    assert meta["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["dim"] == 384 and meta["dtype"] == "float16" and meta["normalized"] is True
    assert meta["max_length"] == MAX_LEN and meta["query_prefix"] == ""
    assert meta["params"]["max_length"] == MAX_LEN and meta["params"]["docs_per_shard"] == 50
    all_ids = []
    for i, s in enumerate(m.shards):
        assert s.uri.endswith(f"emb-{i:05d}.npy") and s.meta["ids_uri"].endswith(f"ids-{i:05d}.json")
        arr = np.load(s.uri)
        assert arr.dtype == np.float16 and arr.shape == (s.docs, 384)
        np.testing.assert_allclose(np.linalg.norm(arr.astype(np.float32), axis=1), 1.0, atol=2e-3)
        all_ids += json.loads(Path(s.meta["ids_uri"]).read_text())
    assert all_ids == [d["id"] for d in pool_docs[:120]]

    ids, X = embed.load_embeddings(out)
    assert ids == all_ids and X.dtype == np.float16 and X.shape == (120, 384)
    # a document embedded alone gives the same vector as inside its shard (fp16 storage tolerance)
    for j in (0, 57, 119):
        alone = model.encode([pool_docs[j]["text"]], normalize_embeddings=True)[0]
        np.testing.assert_allclose(X[j].astype(np.float32), alone, atol=2e-3)
        assert float(X[j].astype(np.float32) @ alone) > 0.9995
    # and vectors are not all alike: neighbours differ
    assert float(X[0].astype(np.float32) @ X[1].astype(np.float32)) < 0.99


def test_load_embeddings_accepts_manifest_uri_and_object(embedded):
    out, m = embedded
    a_ids, a = embed.load_embeddings(m)
    b_ids, b = embed.load_embeddings(store.join(out, "manifest.json"))
    assert a_ids == b_ids and np.array_equal(a, b)
    with pytest.raises(EmbedError, match="not an embeddings manifest"):
        embed.load_embeddings(sc.Manifest([], kind="corpus"))


def test_rerun_same_params_returns_existing_other_params_raise(embedded, small_corpus, model, monkeypatch):
    out, m = embedded
    spy = CountingEncode(model)
    monkeypatch.setattr(model, "encode", spy)
    before = {p.name: p.stat().st_mtime_ns for p in Path(out).iterdir()}
    again = embed.embed_corpus(small_corpus, out, model=model, max_length=MAX_LEN, docs_per_shard=50,
                               progress=False)
    assert spy.calls == [] and again.to_dict() == m.to_dict()
    assert {p.name: p.stat().st_mtime_ns for p in Path(out).iterdir()} == before
    with pytest.raises(EmbedError, match="already holds embeddings"):
        embed.embed_corpus(small_corpus, out, model=model, max_length=MAX_LEN, docs_per_shard=50,
                           query_prefix="query: ", progress=False)
    assert spy.calls == []


def test_resume_after_crash_skips_finished_shards(tmp_path, small_corpus, model, embedded, monkeypatch):
    out = str(tmp_path / "emb")
    crash = CountingEncode(model, fail_on_call=2)
    monkeypatch.setattr(model, "encode", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed.embed_corpus(small_corpus, out, model=model, max_length=MAX_LEN, docs_per_shard=50,
                           progress=False)
    assert not (tmp_path / "emb" / "manifest.json").exists()
    assert (tmp_path / "emb" / "emb-00000.npy").exists() and not (tmp_path / "emb" / "emb-00001.npy").exists()
    mtime0 = (tmp_path / "emb" / "emb-00000.npy").stat().st_mtime_ns
    with pytest.raises(EmbedError, match="manifest.json is missing"):
        embed.load_embeddings(out)  # unfinished: no manifest, not usable

    spy = CountingEncode(model)
    monkeypatch.setattr(model, "encode", spy)
    m = embed.embed_corpus(small_corpus, out, model=model, max_length=MAX_LEN, docs_per_shard=50,
                           progress=False)
    assert spy.calls == [50, 20]  # shard 0 was not recomputed
    assert (tmp_path / "emb" / "emb-00000.npy").stat().st_mtime_ns == mtime0
    assert m.meta["runtime"]["docs_reused"] == 50 and m.meta["runtime"]["docs_encoded"] == 70
    assert not (tmp_path / "emb" / "_params.json").exists()
    ids, X = embed.load_embeddings(out)
    ref_ids, ref = embed.load_embeddings(embedded[0])
    assert ids == ref_ids
    np.testing.assert_allclose(X.astype(np.float32), ref.astype(np.float32), atol=2e-3)


def test_resume_refuses_changed_input_or_params(tmp_path, pool_docs, model, monkeypatch):
    src = str(tmp_path / "corpus")
    sc.write_corpus(pool_docs[:30], src)
    out = str(tmp_path / "emb")
    monkeypatch.setattr(model, "encode", CountingEncode(model, fail_on_call=2))
    with pytest.raises(RuntimeError):
        embed.embed_corpus(src, out, model=model, max_length=MAX_LEN, docs_per_shard=10, progress=False)
    monkeypatch.undo()
    # other params on the unfinished output: refused, shards kept
    with pytest.raises(EmbedError, match="unfinished embedding shards"):
        embed.embed_corpus(src, out, model=model, max_length=MAX_LEN + 1, docs_per_shard=10, progress=False)
    # same params but the input changed under the same URI: refused
    sc.write_corpus(pool_docs[30:60], src)
    with pytest.raises(EmbedError, match="input changed"):
        embed.embed_corpus(src, out, model=model, max_length=MAX_LEN, docs_per_shard=10, progress=False)
    m = embed.embed_corpus(src, out, model=model, max_length=MAX_LEN, docs_per_shard=10, progress=False,
                           overwrite=True)
    assert embed.load_embeddings(m)[0] == [d["id"] for d in pool_docs[30:60]]


def test_query_prefix_is_prepended(tmp_path, pool_docs, model):
    src = str(tmp_path / "corpus")
    docs = [{"id": f"q{i}", "text": d["text"][:200]} for i, d in enumerate(pool_docs[:6])]
    sc.write_corpus(docs, src)
    plain = embed.load_embeddings(embed.embed_corpus(src, str(tmp_path / "a"), model=model, progress=False))[1]
    pref = embed.load_embeddings(embed.embed_corpus(src, str(tmp_path / "b"), model=model, progress=False,
                                                    query_prefix="query: "))[1]
    manual = model.encode(["query: " + d["text"] for d in docs], normalize_embeddings=True)
    np.testing.assert_allclose(pref.astype(np.float32), manual, atol=2e-3)
    cos = np.sum(plain.astype(np.float32) * pref.astype(np.float32), axis=1)
    assert (cos < 0.999).all()  # the prefix changed every vector
    meta = sc.Manifest.load(str(tmp_path / "b")).meta
    assert meta["query_prefix"] == "query: " and meta["params"]["query_prefix"] == "query: "


def test_model_by_name_and_manifest_input(tmp_path, pool_docs, model):
    src = str(tmp_path / "corpus")
    m_in = sc.write_corpus(pool_docs[:5], src, docs_per_shard=2)
    out = embed.embed_corpus(m_in, str(tmp_path / "e"), model="default", device="cpu", max_length=MAX_LEN,
                             progress=False)
    assert out.meta["source"] == sorted(s.uri for s in m_in.shards)
    assert out.meta["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert out.meta["runtime"]["device"] == "cpu" and out.meta["runtime"]["compute_dtype"] == "float32"
    X = embed.load_embeddings(out)[1].astype(np.float32)
    ref = model.encode([d["text"] for d in pool_docs[:5]], normalize_embeddings=True)
    np.testing.assert_allclose(X, ref, atol=2e-3)


def test_empty_corpus_and_missing_text_field_raise(tmp_path, model):
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"id": "a", "text": ""}\n{"id": "b"}\nnot json\n')
    with pytest.raises(EmbedError, match="no documents to embed"):
        embed.embed_corpus(str(bad), str(tmp_path / "out"), model=model, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    good = str(tmp_path / "good")
    sc.write_corpus([{"id": "x", "text": "hello world"}], good)
    with pytest.raises(EmbedError, match="'title'"):
        embed.embed_corpus(good, str(tmp_path / "out2"), model=model, text_field="title", progress=False)
    with pytest.raises(EmbedError, match="docs_per_shard"):
        embed.embed_corpus(good, str(tmp_path / "out3"), model=model, docs_per_shard=0, progress=False)


def test_embed_to_s3_and_back(s3, tmp_path, pool_docs, model):
    src = str(tmp_path / "corpus")
    sc.write_corpus(pool_docs[120:150], src)
    out = f"s3://{s3}/runs/emb"
    m = embed.embed_corpus(src, out, model=model, max_length=MAX_LEN, docs_per_shard=16, progress=False)
    assert [s.docs for s in m.shards] == [16, 14] and m.shards[0].uri.startswith("s3://")
    ids, X = embed.load_embeddings(out)
    assert ids == [d["id"] for d in pool_docs[120:150]]
    local = embed.embed_corpus(src, str(tmp_path / "local"), model=model, max_length=MAX_LEN, docs_per_shard=16,
                               progress=False)
    np.testing.assert_allclose(X.astype(np.float32), embed.load_embeddings(local)[1].astype(np.float32), atol=2e-3)
