"""seedbed.betr.report, fed with stage outputs computed from real data.

The report's inputs (score.json, top_matches.json, metrics.json, thresholds.json, the filter
manifest) are produced here by a cheap stand-in for the upstream stages, run on the real tiny
pool + domains and real benchmark targets: hashed bag-of-words vectors instead of a neural
embedder, a centroid classifier instead of fastText. The numbers and distributions are
therefore real ones (real cosine ranks, real token counts, real sources), in the formats of
docs/stage-contracts.md.
"""

from __future__ import annotations

import base64
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from seedbed import corpus, data, store
from seedbed.betr.report import build_report, fmt_num
from seedbed.betr.sample import sample_corpus
from seedbed.betr.targets import build_targets
from seedbed.text import count_tokens

SHARED = data.shared_data_dir()
pytestmark = pytest.mark.skipif(SHARED is None, reason="no ../shared/data on this machine")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_WORD = re.compile(r"[a-z]{3,}")
_STOP = set("the and for are was were with that this from which what when where who why how not but all any "
            "can has have had its one two also into than then them they their there these those would could "
            "should will may more most other some such only each many much very about after before over under "
            "between following best because been being does did our out you your his her she him".split())


def _vectors(texts: list[str], dim: int = 1 << 13) -> np.ndarray:
    m = np.zeros((len(texts), dim), np.float32)
    for i, t in enumerate(texts):
        for w in _WORD.findall(t[:4000].lower()):
            if w not in _STOP:
                m[i, zlib.crc32(w.encode()) % dim] += 1.0
    m = np.log1p(m)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


def _keep_threshold(scores: np.ndarray, tokens: np.ndarray, rate: float) -> float:
    """Score threshold keeping ``rate`` % of the tokens, best documents first."""
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(tokens[order])
    k = int(np.searchsorted(cum, rate / 100.0 * cum[-1]))
    return float(scores[order[min(k, len(order) - 1)]])


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("betr")
    tiny = data.tiny_data()
    pool = corpus.ingest(tiny.pool_sources, str(root / "pool"), source_field_from_file=True)
    targets = build_targets(str(tiny.benchmarks_dir), str(root / "targets"), target_set="science,gsm8k",
                            mode="aware", per_benchmark=40)
    sample = sample_corpus(pool, 1200, str(root / "sample"), seed=0)
    sample_ids = [r["id"] for r in corpus.iter_corpus(sample)]
    heldout = sample_corpus(pool, 600, str(root / "heldout"), seed=1, exclude_ids=sample_ids)

    T = list(corpus.iter_corpus(targets))
    D = list(corpus.iter_corpus(sample))
    tv, dv = _vectors([t["text"] for t in T]), _vectors([d["text"] for d in D])
    cos = tv @ dv.T  # (targets, docs)
    top_k = 50
    order = np.argsort(-cos, axis=1, kind="stable")[:, :top_k]
    min_rank = np.full(len(D), top_k + 1)
    for i in range(len(T)):
        for r, j in enumerate(order[i]):
            min_rank[j] = min(min_rank[j], r + 1)
    best_cos = cos.max(axis=0)
    rank_score = 1.0 / min_rank + 1e-3 * best_cos  # max aggregation, ties broken by best cosine
    n_pos = len(D) // 10
    pos = np.argsort(-rank_score, kind="stable")[:n_pos]
    labels = np.zeros(len(D), bool)
    labels[pos] = True
    neg = np.flatnonzero(~labels)[:: max(1, (len(D) - n_pos) // n_pos)][:n_pos]
    score = {"n_docs": len(D), "n_targets": len(T), "top_k": top_k, "aggregation": "max", "positive_pct": 10.0,
             "n_positive": int(n_pos), "n_negative": int(len(D) - n_pos), "n_negative_kept": int(len(neg)),
             "params": {"top_k": top_k}}

    # "classifier": difference of class centroids, trained on half the balanced labels
    idx = np.concatenate([pos, neg])
    y = labels[idx]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(idx))
    tr, te = perm[: len(perm) // 2], perm[len(perm) // 2:]
    w = dv[idx[tr]][y[tr]].mean(0) - dv[idx[tr]][~y[tr]].mean(0)
    raw_tr = dv[idx[tr]] @ w
    mid = float(np.median(raw_tr))
    scale = float(raw_tr.std() or 1.0)

    def clf(vecs):
        return 1.0 / (1.0 + np.exp(-(vecs @ w - mid) / scale))

    pred = clf(dv[idx[te]]) >= 0.5
    tp, fp, fn = int((pred & y[te]).sum()), int((pred & ~y[te]).sum()), int((~pred & y[te]).sum())
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    metrics = {"accuracy": float((pred == y[te]).mean()), "precision": prec, "recall": rec,
               "f1": 2 * prec * rec / max(prec + rec, 1e-9), "n_train": int(len(tr)), "n_heldout": int(len(te)),
               "threads": 1, "params": {"epoch": 5}}

    H = list(corpus.iter_corpus(heldout))
    hs = clf(_vectors([h["text"] for h in H]))
    htok = np.array([count_tokens(h["text"]) for h in H])
    rates = [3, 10, 30]
    thr = {str(r): _keep_threshold(hs, htok, r) for r in rates}
    thresholds = {"keep_rates": rates, "thresholds": thr,
                  "docs_kept": {k: int((hs >= t).sum()) for k, t in thr.items()},
                  "tokens_kept": {k: int(htok[hs >= t].sum()) for k, t in thr.items()},
                  "sample_docs": len(H), "sample_tokens": int(htok.sum()),
                  "score_sample": [float(s) for s in hs], "params": {"keep_rates": rates}}

    # filter the whole pool at the 10% threshold
    P = list(corpus.iter_corpus(pool))
    ps = clf(_vectors([p["text"] for p in P]))
    keep = ps >= thr["10"]
    ptok = np.array([count_tokens(p["text"]) for p in P])
    by_source: dict = {}
    for p, k in zip(P, keep):
        s = by_source.setdefault(p["source"], {"docs_in": 0, "docs_kept": 0})
        s["docs_in"] += 1
        s["docs_kept"] += int(k)
    fmeta = {"threshold": thr["10"], "keep_rate": 10,
             "totals": {"docs_in": len(P), "docs_kept": int(keep.sum()), "tokens_in": int(ptok.sum()),
                        "tokens_kept": int(ptok[keep].sum()), "bad_json": 0, "bad_utf8": 0, "no_text": 0,
                        "empty_text": 0, "malformed": 0},
             "by_source": by_source, "params": {"keep_rate": 10}}
    corpus.Manifest([], meta=fmeta).save(str(root / "filter" / "manifest.json"))

    top = [{"target_id": T[i]["id"], "benchmark": T[i]["benchmark"], "target_text": T[i]["text"],
            "matches": [{"id": D[j]["id"], "cos": float(cos[i, j]), "text": D[j]["text"], "source": D[j]["source"]}
                        for j in order[i][:5]]} for i in range(len(T))]

    uris = {"score_json": root / "score.json", "top_matches_json": root / "top_matches.json",
            "metrics_json": root / "metrics.json", "thresholds_json": root / "thresholds.json"}
    for (k, u), obj in zip(uris.items(), (score, top, metrics, thresholds)):
        store.write_json(str(u), obj)
    return {"root": root, "uris": {k: str(v) for k, v in uris.items()}, "filter": str(root / "filter"),
            "score": score, "metrics": metrics, "thresholds": thresholds, "fmeta": fmeta, "top": top}


def _images(md: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)]


def test_full_report(tmp_path, stage_outputs):
    so = stage_outputs
    out = str(tmp_path / "report")
    res = build_report(out, filter_manifest=so["filter"], **so["uris"])
    md = Path(res["markdown_uri"]).read_text()
    page = Path(res["html_uri"]).read_text()
    for heading in ("# BETR selection report", "## Summary", "## Targets and scoring", "## Classifier",
                    "## Score distribution and thresholds", "## Filter", "### Kept documents by source",
                    "## Best-matching documents"):
        assert heading in md.splitlines(), heading
        assert heading.lstrip("# ") in page
    assert res["summary"]["sections"] == ["summary", "scoring", "classifier", "thresholds", "filter", "top_matches"]

    # the numbers given are the numbers shown
    sc, me, th, fm = so["score"], so["metrics"], so["thresholds"], so["fmeta"]
    assert f"| n_docs | {fmt_num(sc['n_docs'])} |" in md and f"| n_targets | {fmt_num(sc['n_targets'])} |" in md
    assert f"| accuracy | {fmt_num(me['accuracy'])} |" in md and f"| f1 | {fmt_num(me['f1'])} |" in md
    for k, t in th["thresholds"].items():
        assert f"| {k}% | {fmt_num(t)} | {fmt_num(th['docs_kept'][k])} |" in md
        assert res["summary"]["thresholds"][k]["threshold"] == t
    tot = fm["totals"]
    assert f"{fmt_num(tot['docs_kept'])} / {fmt_num(tot['docs_in'])}" in md
    assert res["summary"]["filter"]["docs_kept"] == tot["docs_kept"]
    for src, v in fm["by_source"].items():
        assert f"| {src} | {fmt_num(v['docs_in'])} | {fmt_num(v['docs_kept'])} |" in md
    assert set(res["summary"]["by_source"]) == set(fm["by_source"]) and len(fm["by_source"]) >= 5
    assert abs(sum(v["kept_share_pct"] for v in res["summary"]["by_source"].values()) - 100) < 1e-6

    # best matches: one target per benchmark first, texts truncated
    shown = res["summary"]["top_matches"]
    assert len(shown) == 5 and len({t["benchmark"] for t in shown}) == 5
    first = so["top"][0]
    assert f"### {first['benchmark']} · {first['target_id']}" in md
    assert all(len(line) < 2000 for line in md.splitlines() if not line.startswith("!["))
    # document text cannot break a table (MATH docs hold real "|x|" pipes) or inject HTML
    for block in md.split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("| ")]
        if rows:
            cols = {len(re.findall(r"(?<!\\)\|", ln)) for ln in rows}
            assert len(cols) == 1, rows[0]
    assert "<" not in "".join(ln for ln in md.splitlines() if not ln.startswith("!["))

    # plots: valid PNGs, embedded in both files and written next to them
    imgs = _images(md)
    assert len(imgs) == 4 and all(i.startswith(PNG_MAGIC) for i in imgs)
    assert page.count('src="data:image/png;base64,') == 4
    assert set(res["summary"]["pngs"]) == {"metrics.png", "score_hist.png", "by_source.png", "keep_rates.png"}
    for name, uri in res["summary"]["pngs"].items():
        b = Path(uri).read_bytes()
        assert b.startswith(PNG_MAGIC) and b in imgs, name
        w, h = int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
        assert w >= 400 and h >= 200


def test_report_is_deterministic(tmp_path, stage_outputs):
    so = stage_outputs
    a = build_report(str(tmp_path / "a"), filter_manifest=so["filter"], **so["uris"])
    b = build_report(str(tmp_path / "b"), filter_manifest=so["filter"], **so["uris"])
    assert Path(a["markdown_uri"]).read_bytes() == Path(b["markdown_uri"]).read_bytes()


def test_sections_are_omitted_for_missing_inputs(tmp_path, stage_outputs):
    so = stage_outputs
    res = build_report(str(tmp_path / "r"), thresholds_json=so["uris"]["thresholds_json"], title="Only thresholds")
    md = Path(res["markdown_uri"]).read_text()
    assert md.startswith("# Only thresholds\n")
    assert "## Score distribution and thresholds" in md
    for absent in ("## Classifier", "## Filter", "## Best-matching documents", "## Targets and scoring"):
        assert absent not in md
    assert res["summary"]["sections"] == ["summary", "thresholds"]
    assert len(_images(md)) == 2  # histogram + keep rates
    empty = build_report(str(tmp_path / "e"))
    assert "No stage outputs were given." in Path(empty["markdown_uri"]).read_text()
    assert empty["summary"]["pngs"] == {}


def test_filter_manifest_as_a_kfp_artifact_file(tmp_path, stage_outputs):
    """KFP hands the manifest over as a file named like ``.../manifest/data`` (no .json)."""
    art = tmp_path / "artifacts" / "manifest" / "data"
    art.parent.mkdir(parents=True)
    art.write_bytes((Path(stage_outputs["filter"]) / "manifest.json").read_bytes())
    a = build_report(str(tmp_path / "a"), filter_manifest=str(art))
    b = build_report(str(tmp_path / "b"), filter_manifest=stage_outputs["filter"])
    assert a["summary"]["filter"] == b["summary"]["filter"]
    assert a["summary"]["filter"]["docs_in"] == stage_outputs["fmeta"]["totals"]["docs_in"]


def test_bad_inputs(tmp_path, stage_outputs):
    with pytest.raises(store.NotFound):
        build_report(str(tmp_path / "r"), score_json=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="expected a JSON list"):
        build_report(str(tmp_path / "r"), top_matches_json=stage_outputs["uris"]["score_json"])
    with pytest.raises(ValueError, match="not a seedbed manifest"):
        build_report(str(tmp_path / "r"), filter_manifest=stage_outputs["uris"]["top_matches_json"])
    assert not (tmp_path / "r" / "report.md").exists()


def test_keep_rates_match_numerically(tmp_path, stage_outputs):
    """keep_rates delivered as floats (KFP) still find their "3"/"10"/"30" entries."""
    th = dict(stage_outputs["thresholds"], keep_rates=[3.0, 10.0, 30.0])
    th["docs_kept_pct"] = {k: 100.0 * v / th["sample_docs"] for k, v in th["docs_kept"].items()}
    uri = str(tmp_path / "thresholds.json")
    store.write_json(uri, th)
    res = build_report(str(tmp_path / "r"), thresholds_json=uri)
    got = res["summary"]["thresholds"]
    assert set(got) == {"3", "10", "30"}
    for k, v in got.items():
        assert v["threshold"] == th["thresholds"][k]
        assert v["docs_kept_pct"] == pytest.approx(th["docs_kept_pct"][k])
        assert v["tokens_kept_pct"] == pytest.approx(100.0 * th["tokens_kept"][k] / th["sample_tokens"])
