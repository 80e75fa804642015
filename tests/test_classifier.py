"""BETR classifier (train / evaluate / load / score) and the CPU-count helper, on real text.

The labels are a real supervised task built from the tiny real data, independent of the
earlier BETR stages: math + science-abstract docs are positive, Wikipedia + web-pool docs
negative.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from seedbed import store
from seedbed.betr import classifier as C
from seedbed.resources import available_cpus, cgroup_cpu_quota
from seedbed.text import normalize

from conftest import TINY, read_jsonl  # missing data fails the session fixture, never skips

# small and quick, still a real fastText model; the defaults are checked separately
FAST = {"bucket": 20_000, "dim": 32, "lr": 0.2, "epoch": 20}



def label_records() -> list[dict]:
    pos = read_jsonl(TINY / "domains" / "math.jsonl.gz") + read_jsonl(TINY / "domains" / "science_abstracts.jsonl.gz")
    neg = read_jsonl(TINY / "domains" / "wikipedia.jsonl.gz") + read_jsonl(TINY / "pool_tiny.jsonl.gz")[:200]
    return [{"id": r["id"], "text": r["text"], "label": 1} for r in pos] + [
        {"id": r["id"], "text": r["text"], "label": 0} for r in neg
    ]


def write_labels(path: Path, recs: list[dict]) -> str:
    with gzip.open(path, "wb") as f:
        for r in recs:
            f.write(orjson.dumps(r) + b"\n")
    return str(path)


@pytest.fixture(scope="module")
def labels_uri(tmp_path_factory) -> str:
    return write_labels(tmp_path_factory.mktemp("labels") / "labels.jsonl.gz", label_records())


@pytest.fixture(scope="module")
def trained(labels_uri, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model"))
    metrics = C.train_classifier(labels_uri, out, params=FAST, threads=1)
    return out, metrics


# ----------------------------------------------------------------------------- training


def test_train_writes_model_and_metrics(trained, labels_uri):
    out, m = trained
    assert store.exists(store.join(out, "model.bin"))
    on_disk = store.read_json(store.join(out, "metrics.json"))
    assert on_disk == json.loads(json.dumps(m))
    # a real task on real text: well above chance (0.5 on the balanced held-out set)
    assert m["accuracy"] >= 0.85, m
    assert m["f1"] >= 0.8 and m["auc"] >= 0.9, m
    for k in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= m[k] <= 1.0
    assert m["n_train"] + m["n_heldout"] == 800
    # stratified 10% split
    assert m["label_counts"]["heldout"] == {"pos": 40, "neg": 40}
    assert m["label_counts"]["train"] == {"pos": 360, "neg": 360}
    assert m["threads"] == 1
    p = m["params"]
    assert p["wordNgrams"] == 2 and p["minCount"] == 5  # defaults kept
    assert p["lr"] == 0.2 and p["epoch"] == 20 and p["bucket"] == 20_000  # overrides applied
    assert p["heldout_frac"] == 0.1 and p["seed"] == 0 and p["labels_uri"] == labels_uri


def test_default_params_are_the_papers():
    assert C.DEFAULT_PARAMS == dict(wordNgrams=2, lr=0.03, dim=128, minCount=5, epoch=5)
    resolved = C._resolve_params({"lr": 0.1})
    assert resolved["lr"] == 0.1 and resolved["dim"] == 128


def test_rerun_is_idempotent_and_param_change_is_refused(trained, labels_uri, monkeypatch):
    out, m = trained
    import fasttext

    def boom(*a, **k):
        raise AssertionError("must not retrain")

    monkeypatch.setattr(fasttext, "train_supervised", boom)
    assert C.train_classifier(labels_uri, out, params=FAST, threads=1) == json.loads(json.dumps(m))
    with pytest.raises(C.ClassifierError, match="different params"):
        C.train_classifier(labels_uri, out, params={**FAST, "epoch": 3}, threads=1)


def test_overwrite_retrains(labels_uri, tmp_path):
    out = str(tmp_path / "m")
    C.train_classifier(labels_uri, out, params={**FAST, "epoch": 2}, threads=1)
    m2 = C.train_classifier(labels_uri, out, params={**FAST, "epoch": 3}, threads=1, overwrite=True)
    assert m2["params"]["epoch"] == 3
    assert store.read_json(store.join(out, "metrics.json"))["params"]["epoch"] == 3


def test_single_thread_training_is_deterministic(labels_uri, tmp_path):
    a = C.train_classifier(labels_uri, str(tmp_path / "a"), params={**FAST, "epoch": 2}, threads=1)
    b = C.train_classifier(labels_uri, str(tmp_path / "b"), params={**FAST, "epoch": 2}, threads=1)
    assert (tmp_path / "a" / "model.bin").read_bytes() == (tmp_path / "b" / "model.bin").read_bytes()
    assert a["accuracy"] == b["accuracy"]


def test_unknown_params_list_valid_ones(labels_uri, tmp_path):
    with pytest.raises(C.ClassifierError) as e:
        C.train_classifier(labels_uri, str(tmp_path), params={"learning_rate": 0.1})
    msg = str(e.value)
    assert "learning_rate" in msg and "wordNgrams" in msg and "minCount" in msg
    with pytest.raises(C.ClassifierError, match="train_classifier arguments"):
        C.train_classifier(labels_uri, str(tmp_path), params={"thread": 4})
    assert not (tmp_path / "metrics.json").exists()


def test_one_class_or_too_few_docs_raise(tmp_path):
    recs = label_records()
    only_pos = write_labels(tmp_path / "pos.jsonl.gz", [r for r in recs if r["label"] == 1])
    with pytest.raises(ValueError, match="both classes"):
        C.train_classifier(only_pos, str(tmp_path / "o1"), params=FAST)
    few = write_labels(tmp_path / "few.jsonl.gz", recs[:3] + recs[-3:])
    with pytest.raises(ValueError, match="too few"):
        C.train_classifier(few, str(tmp_path / "o2"), params=FAST)
    bad = write_labels(tmp_path / "bad.jsonl.gz", recs[:10] + [{"id": "x", "text": "hello world", "label": 2}])
    with pytest.raises(ValueError, match="label must be 1 or 0"):
        C.train_classifier(bad, str(tmp_path / "o3"), params=FAST)
    with pytest.raises(ValueError, match="heldout_frac"):
        C.train_classifier(few, str(tmp_path / "o4"), heldout_frac=1.5)
    for d in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / d / "metrics.json").exists()


def test_labels_file_with_malformed_lines_is_counted(tmp_path):
    recs = label_records()
    p = tmp_path / "labels.jsonl"
    with open(p, "wb") as f:
        for r in recs:
            f.write(orjson.dumps(r) + b"\n")
        f.write(b"{not json\n")
        f.write(b'{"id": "e", "text": "", "label": 1}\n')
    m = C.train_classifier(str(p), str(tmp_path / "m"), params=FAST, threads=1)
    assert m["read_stats"]["bad_json"] == 1 and m["read_stats"]["empty_text"] == 1
    assert m["n_train"] + m["n_heldout"] == 800


def test_split_is_stratified_seeded_and_order_independent():
    recs = label_records()
    tr1, he1 = C.split_heldout(recs, 0.1, seed=7)
    shuffled = recs[:]
    random.Random(3).shuffle(shuffled)
    tr2, he2 = C.split_heldout(shuffled, 0.1, seed=7)
    assert [d["id"] for d in he1] == [d["id"] for d in he2]
    assert [d["id"] for d in tr1] == [d["id"] for d in tr2]
    assert not {d["id"] for d in tr1} & {d["id"] for d in he1}
    _, he3 = C.split_heldout(recs, 0.1, seed=8)
    assert {d["id"] for d in he3} != {d["id"] for d in he1}


# ----------------------------------------------------------------------------- scoring


def test_scores_are_probabilities_of_the_positive_class(trained):
    out, _ = trained
    clf = C.Classifier.load(store.join(out, "model.bin"))
    recs = label_records()
    texts = [r["text"] for r in recs]
    s = clf.score(texts)
    assert s.shape == (len(texts),) and s.dtype == np.float64
    assert np.all((s >= 0) & (s <= 1))
    # binary softmax with k=1 equals P(pos) from k=2 (fastText reports p + 1e-5)
    labels, probs = clf.model.predict([normalize(t) for t in texts], k=2)
    ref = np.array([dict(zip(l, p))[C.POS_LABEL] for l, p in zip(labels, probs)]) - 1e-5
    np.testing.assert_allclose(s, ref, atol=1e-6)
    y = np.array([r["label"] for r in recs])
    assert np.mean((s >= 0.5) == (y == 1)) > 0.9  # (mostly training docs)
    assert clf.score([]).shape == (0,)


def test_normalizer_newlines_and_predict_never_sees_newline(trained, monkeypatch):
    out, _ = trained
    clf = C.Classifier.load(store.join(out, "model.bin"))
    seen: list[list[str]] = []
    real = clf._predict

    def spy(lines, k, thr, err):
        seen.append(list(lines))
        return real(lines, k, thr, err)

    monkeypatch.setattr(clf, "_predict", spy)
    doc = read_jsonl(TINY / "domains" / "math.jsonl.gz")[0]["text"]
    assert "\n" in doc
    joined = " ".join(doc.split("\n"))
    a, b, c = clf.score([doc, joined, "Theorem.\n\nLet\tx\r\nbe  real."])
    assert a == b
    assert c == clf.score(["Theorem. Let x be real."])[0]
    # newlines are replaced, not deleted: words on both sides stay apart
    assert normalize("end of line\nnext word") == "end of line next word"
    for batch in seen:
        for line in batch:
            assert line.endswith("\n") and "\n" not in line[:-1] and "\r" not in line


def test_classifier_rejects_non_binary_model(tmp_path):
    # a real 3-class model (math / science / wikipedia), trained the way the library trains
    p = tmp_path / "three.txt"
    with open(p, "w") as f:
        for name in ("math", "science_abstracts", "wikipedia"):
            for r in read_jsonl(TINY / "domains" / f"{name}.jsonl.gz"):
                f.write(f"__label__{name} {normalize(r['text'])}\n")
    C._train_isolated(str(p), str(tmp_path / "three.bin"), dict(bucket=20_000, dim=16, epoch=5, thread=1, verbose=0))
    with pytest.raises(C.ClassifierError, match="binary"):
        C.Classifier.load(str(tmp_path / "three.bin"))


def test_training_failure_is_a_clear_error(labels_uri, tmp_path):
    with pytest.raises(C.ClassifierError, match="fastText training failed"):
        C.train_classifier(labels_uri, str(tmp_path), params={"loss": "no-such-loss"}, threads=1)
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "model.bin").exists()


# ----------------------------------------------------------------------------- CPUs


def test_available_cpus_respects_env_affinity_and_quota(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("SEEDBED_THREADS", raising=False)
    affinity = len(os.sched_getaffinity(0))
    assert 1 <= available_cpus() <= affinity
    monkeypatch.setenv("SEEDBED_THREADS", "3")
    assert available_cpus() == 3
    monkeypatch.setenv("SEEDBED_THREADS", "zero")
    with pytest.raises(ValueError, match="SEEDBED_THREADS"):
        available_cpus()
    monkeypatch.delenv("SEEDBED_THREADS")

    # cgroup v2, private namespace: cpu.max at the root; 0.5 CPU rounds up to 1
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("50000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    assert cgroup_cpu_quota(v2, proc) == 0.5
    assert available_cpus(v2, proc) == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, proc) is None
    assert available_cpus(v2, proc) == affinity
    # nested cgroup v2 path: the tightest ancestor wins
    (v2 / "kubepods" / "pod1").mkdir(parents=True)
    (v2 / "kubepods" / "cpu.max").write_text("150000 100000\n")
    (v2 / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    proc.write_text("0::/kubepods/pod1\n")
    assert cgroup_cpu_quota(v2, proc) == 1.5
    assert available_cpus(v2, proc) == min(affinity, 2)

    # cgroup v1 CFS quota (-1 = unlimited)
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:cpu,cpuacct:/\n")
    assert cgroup_cpu_quota(v1, proc) == 1.0 and available_cpus(v1, proc) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v1, proc) is None
