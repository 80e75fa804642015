"""seedbed.betr.targets on the real benchmark files (tiny subset and full shared benchmarks)."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pytest

from seedbed import corpus, data
from seedbed.betr import targets as T

SHARED = data.shared_data_dir()
pytestmark = pytest.mark.usefixtures("shared_data")  # missing data fails, never skips
TINY = str(SHARED / "tiny" / "benchmarks_tiny.jsonl.gz") if SHARED else ""
FULL = str(SHARED / "benchmarks") if SHARED else ""


def _raw(uri: str) -> dict[str, dict]:
    """All benchmark records of a file/dir keyed like target ids."""
    out = {}
    for ex in T.load_examples(uri):
        out[f"{ex.benchmark}/{ex.split}/{ex.id}"] = ex.raw
    return out


def _targets(m: corpus.Manifest) -> list[dict]:
    return list(corpus.iter_corpus(m))


@pytest.fixture(scope="module")
def tiny_raw() -> dict[str, dict]:
    return _raw(TINY)


def test_load_examples_single_file_and_directory():
    stats: dict = {}
    tiny = T.load_examples(TINY, stats)
    assert len(tiny) == 750 and stats["files"] == 1 and stats["malformed"] == 0
    assert len({e.benchmark for e in tiny}) == 11
    full = T.load_examples(FULL)
    counts = json.loads((SHARED / "benchmarks" / "counts.json").read_text())
    assert len(full) == sum(counts.values())


def test_aware_equal_counts_and_split_preference(tmp_path):
    m = T.build_targets(TINY, str(tmp_path / "t"), target_set="core", mode="aware", per_benchmark=30)
    recs = _targets(m)
    counts = Counter(r["benchmark"] for r in recs)
    assert counts == {b: 30 for b in ["mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq", "triviaqa", "winogrande"]}
    assert m.meta["counts"] == dict(counts) and m.docs == 240
    # ARC has a train split: targets come from it only; MMLU has none: dev first
    by_split = m.meta["counts_by_split"]
    assert by_split["arc_easy"] == {"train": 30} and by_split["arc_challenge"] == {"train": 30}
    assert by_split["mmlu"] == {"dev": 30}
    assert by_split["sciq"] == {"validation": 30}
    # what is missing or unusable is said, not hidden
    assert m.meta["missing"] == ["webquestions"]
    assert "lambada_openai" in m.meta["skipped"] and "test" in m.meta["skipped"]["lambada_openai"]
    assert "no train split" in m.meta["split_notes"]["sciq"] and "arc_easy" not in m.meta["split_notes"]
    assert m.meta["eval_exclusions"]["arc_easy"] == ["train"] and m.meta["eval_exclusions"]["sciq"] == ["validation"]
    assert {r["split"] for r in recs} <= {"train", "dev", "validation"}
    assert set(recs[0]) == {"id", "text", "benchmark", "split"}
    assert len({r["id"] for r in recs}) == len(recs)


def test_aware_tops_up_and_reports_short(tmp_path):
    m = T.build_targets(TINY, str(tmp_path / "t"), target_set="arc,sciq", mode="aware", per_benchmark=80)
    assert m.meta["counts_by_split"]["arc_easy"] == {"train": 50, "validation": 30}
    assert "topped up from validation" in m.meta["split_notes"]["arc_easy"]
    assert m.meta["counts"]["sciq"] == 50 and m.meta["short"] == {"sciq": 50}


def test_aware_full_benchmarks_core(tmp_path):
    m = T.build_targets(FULL, str(tmp_path / "t"), target_set="core", per_benchmark=500)
    assert set(m.meta["counts"].values()) == {500} and len(m.meta["counts"]) == 8
    assert m.meta["counts_by_split"]["mmlu"] == {"dev": 285, "validation": 215}
    assert m.meta["counts_by_split"]["arc_challenge"] == {"train": 500}


def test_blind_takes_everything_unbalanced(tmp_path, tiny_raw):
    m = T.build_targets(TINY, str(tmp_path / "t"), target_set="science", mode="blind")
    expected = Counter(r["benchmark"] for r in tiny_raw.values()
                       if r["benchmark"] in T.TARGET_SETS["science"] and r["split"] != "test")
    assert m.meta["counts"] == dict(expected) == {"arc_easy": 100, "arc_challenge": 100, "openbookqa": 100, "sciq": 50}
    assert m.meta["params"]["per_benchmark"] is None
    # test splits are only used when asked for
    m2 = T.build_targets(TINY, str(tmp_path / "t2"), target_set="lambada_openai", mode="blind", exclude_splits=())
    assert m2.meta["counts_by_split"] == {"lambada_openai": {"test": 50}}


def test_text_has_question_and_correct_answer(tmp_path, tiny_raw):
    m = T.build_targets(TINY, str(tmp_path / "t"), target_set="all", mode="blind", exclude_splits=())
    recs = _targets(m)
    assert m.docs == 750
    for r in recs:
        raw = tiny_raw[r["id"]]
        text, q, a = r["text"], raw["question"].strip(), str(raw["answer_text"]).strip()
        if raw["choices"] is not None:
            assert raw["choices"][raw["answer"]].strip() == a
        if raw["benchmark"] == "hellaswag":
            assert T._hellaswag_clean(a) in text and "[" not in text.replace(q, "")
        elif raw["benchmark"] == "winogrande":
            assert q.replace("_", a, 1) == text
        elif raw["benchmark"] == "gsm8k":
            continue  # below
        else:
            assert q in text and text.endswith(a), r["id"]
        if raw["benchmark"] in ("lambada_openai", "basic_arithmetic"):
            assert text == f"{q} {a}"
    # a wrong choice is never the answer given
    arc = next(r for r in recs if r["benchmark"] == "arc_easy")
    raw = tiny_raw[arc["id"]]
    wrong = [c for i, c in enumerate(raw["choices"]) if i != raw["answer"] and c not in raw["answer_text"]]
    assert not any(arc["text"].endswith("\n" + w) for w in wrong)


def test_text_keeps_sciq_support_and_gsm8k_solution(tmp_path):
    raw = _raw(FULL)
    m = T.build_targets(FULL, str(tmp_path / "t"), target_set="sciq,gsm8k", mode="aware", per_benchmark=200)
    recs = _targets(m)
    sciq = [r for r in recs if r["benchmark"] == "sciq"]
    with_ctx = [r for r in sciq if raw[r["id"]].get("context")]
    assert len(with_ctx) > 150
    for r in with_ctx:
        ex = raw[r["id"]]
        assert r["text"] == f"{ex['context'].strip()}\n{ex['question'].strip()}\n{ex['answer_text'].strip()}"
    gsm = [r for r in recs if r["benchmark"] == "gsm8k"]
    assert len(gsm) == 200 and {r["split"] for r in gsm} == {"train"}
    for r in gsm:
        ex = raw[r["id"]]
        assert r["text"].startswith(ex["question"].strip() + "\n")
        assert "<<" not in r["text"] and r["text"].endswith(f"#### {ex['answer']}")
        solution_lines = [re.sub(r"<<[^<>]*>>", "", line) for line in ex["answer_text"].splitlines()]
        assert all(line in r["text"] for line in solution_lines)
    natalia = T.format_target(next(e for e in raw.values() if e["id"] == "gsm8k-train-0000"))
    assert "Natalia sold 48/2 = 24 clips in May." in natalia


def test_unknown_names_list_known_ones(tmp_path):
    with pytest.raises(ValueError) as e:
        T.build_targets(TINY, str(tmp_path / "t"), target_set="arc,not_a_benchmark")
    msg = str(e.value)
    assert "'not_a_benchmark'" in msg
    for known in ("arc_easy", "gsm8k", "lambada_openai", "winogrande", "core", "science", "all"):
        assert known in msg
    assert not (tmp_path / "t" / "manifest.json").exists()
    # a set whose members are all absent from the data is an error too
    with pytest.raises(ValueError, match="names no benchmark present"):
        T.resolve_target_set("gsm8k", {"arc_easy", "sciq"})
    with pytest.raises(ValueError, match="unknown mode"):
        T.build_targets(TINY, str(tmp_path / "t"), mode="sideways")


def test_explicit_names_and_dedup():
    chosen, missing = T.resolve_target_set("arc, arc_easy ,gsm8k", {"arc_easy", "arc_challenge", "gsm8k", "sciq"})
    assert chosen == ["arc_easy", "arc_challenge", "gsm8k"] and missing == []
    chosen, missing = T.resolve_target_set(["qa"], {"triviaqa"})
    assert chosen == ["triviaqa"] and missing == ["nq_open", "webquestions"]


def test_seeded_choice(tmp_path):
    ids = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"s{seed}-{len(ids)}"
        m = T.build_targets(TINY, str(out), target_set="arc,sciq", per_benchmark=20, seed=seed)
        ids[(seed, len(ids))] = [r["id"] for r in _targets(m)]
    a, b, c = ids.values()
    assert a == b and len(a) == 60 and a != c and len(set(a) & set(c)) < 40


def test_idempotent_and_conflicting_params(tmp_path):
    out = str(tmp_path / "t")
    m1 = T.build_targets(TINY, out, target_set="arc", per_benchmark=20)
    created = m1.meta["created"]
    m2 = T.build_targets(TINY, out, target_set="arc", per_benchmark=20)
    assert m2.meta["created"] == created and m2.to_dict() == m1.to_dict()
    with pytest.raises(ValueError, match="already holds targets"):
        T.build_targets(TINY, out, target_set="arc", per_benchmark=21)
    m3 = T.build_targets(TINY, out, target_set="arc", per_benchmark=21, overwrite=True)
    assert m3.docs == 42


def test_stale_shards_of_an_interrupted_run_are_cleared(tmp_path):
    out = tmp_path / "t"
    T.build_targets(TINY, str(out), target_set="all", mode="blind", docs_per_shard=100)
    (out / "manifest.json").unlink()  # as if the run died before the manifest
    m = T.build_targets(TINY, str(out), target_set="arc", per_benchmark=10, docs_per_shard=100)
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.jsonl.gz"]
    assert len(list(corpus.iter_corpus(str(out)))) == m.docs == 20


def test_bad_input_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no benchmark files"):
        T.build_targets(str(empty), str(tmp_path / "o1"))
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"not": "a benchmark"}\nnot json\n')
    with pytest.raises(ValueError, match="no usable benchmark records .* 2 malformed"):
        T.build_targets(str(bad), str(tmp_path / "o2"))
    with pytest.raises(ValueError, match="per_benchmark"):
        T.build_targets(TINY, str(tmp_path / "o3"), per_benchmark=0)


def test_kfp_style_parameters(tmp_path):
    """Comma-separated strings for lists and integral floats for ints, as KFP passes them."""
    m = T.build_targets(TINY, str(tmp_path / "t"), target_set="arc_easy,mmlu", per_benchmark=30.0,
                        splits="validation,dev", exclude_splits="")
    assert m.meta["counts_by_split"] == {"arc_easy": {"validation": 30}, "mmlu": {"validation": 30}}
    assert m.meta["params"]["splits"] == ["validation", "dev"] and m.meta["params"]["per_benchmark"] == 30
