"""seedbed.betr.report, fed with the real stage outputs of a small BETR run on real data.

The report's inputs (score.json, top_matches.json, metrics.json, thresholds.json, the filter
manifest) come from the real stages (packaged MiniLM embeddings, exact top-K scoring, fastText,
token thresholds, the sharded filter) run on the tiny pool + domains and real benchmark
targets: the same files the pipeline hands to the report component.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from conftest import FAST_FASTTEXT
from seedbed import corpus, data, store
from seedbed.betr.classifier import train_classifier
from seedbed.betr.embed import embed_corpus
from seedbed.betr.filter import filter_corpus
from seedbed.betr.report import build_report, fmt_num
from seedbed.betr.sample import sample_corpus
from seedbed.betr.score import score_and_label
from seedbed.betr.targets import build_targets
from seedbed.betr.threshold import compute_thresholds

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory, tiny) -> dict:
    root = tmp_path_factory.mktemp("betr")
    paths = data.tiny_data()
    pool = corpus.ingest(paths.pool_sources, str(root / "pool"), docs_per_shard=800, source_field_from_file=True)
    targets = build_targets(str(paths.benchmarks_dir), str(root / "targets"), target_set="science,gsm8k",
                            mode="aware", per_benchmark=40)
    sample = sample_corpus(pool, 800, str(root / "sample"), seed=0)
    emb_t = embed_corpus(targets, str(root / "emb-targets"), max_length=64, progress=False)
    emb_s = embed_corpus(sample, str(root / "emb-sample"), max_length=64, progress=False)
    score_and_label(emb_t, emb_s, sample, str(root / "score"), top_k=50, target_corpus=targets)
    train_classifier(str(root / "score" / "labels.jsonl.gz"), str(root / "classifier"),
                     params=dict(FAST_FASTTEXT, minCount=1), threads=1)
    model = str(root / "classifier" / "model.bin")
    thresholds = compute_thresholds(model, pool, str(root / "thresholds"), keep_rates=(3, 10, 30),
                                    sample_size=600, seed=1, exclude_corpus=sample)
    fm = filter_corpus(model, pool, str(root / "filter"), threshold=thresholds["thresholds"]["10"], keep_rate=10)

    uris = {"score_json": root / "score" / "score.json", "top_matches_json": root / "score" / "top_matches.json",
            "metrics_json": root / "classifier" / "metrics.json",
            "thresholds_json": root / "thresholds" / "thresholds.json"}
    uris = {k: str(v) for k, v in uris.items()}
    return {"root": root, "uris": uris, "filter": str(root / "filter"),
            "score": store.read_json(uris["score_json"]), "metrics": store.read_json(uris["metrics_json"]),
            "thresholds": store.read_json(uris["thresholds_json"]), "fmeta": fm.meta,
            "top": store.read_json(uris["top_matches_json"])}


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
