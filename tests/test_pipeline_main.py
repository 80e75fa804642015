"""The main job, curate-and-grow, end to end through kfp.local on the tiny real data, via the CLI:
BETR selection → the selection as a mixture domain → sweep/fit/h* → a two-stage series trained on
the fitted schedule → evaluation of both models → one report."""

import json

import pytest
import yaml
from conftest import run_cli as _run

# about 4.5 minutes on 2 cores: the README's first command runs the same pipeline at a larger size;
# `bash scripts/test.sh -m slow` runs this
pytestmark = pytest.mark.slow

CONFIG = {
    "betr": {"domain": "betr", "target_set": "arc_easy,sciq", "per_benchmark": 40, "sample_size": 600,
             "heldout_size": 400, "keep_rate": 30, "embed_max_length": 64, "embed_device": "cpu",
             "fasttext": {"lr": 0.2, "epoch": 20, "minCount": 1}, "docs_per_shard": 500},
    "tokens": {"vocab_size": 1024, "valid_fraction": 0.05},
    "sweep": {"presets": ["tiny-64", "tiny-128"], "tokens": [3072, 3072], "heldout_presets": [], "heldout_tokens": [],
              "n_mixtures": 4, "min_weight": 0.15, "eval_points": 2,
              "settings": {"seq_len": 64, "global_batch_tokens": 1024, "micro_batch_size": 16, "warmup_steps": 1,
                           "eval_tokens": 1024}},
    "series": {"presets": ["tiny-64", "tiny-128"], "tokens": [4096, 8192],
               "settings": {"seq_len": 64, "global_batch_tokens": 1024, "micro_batch_size": 16, "warmup_steps": 1,
                            "eval_tokens": 1024}},
    "run": {"mode": "local", "gpus_per_node": 0, "procs_per_node": 1},
    "eval": {"tasks": ["arc_easy"], "limit": 20, "device": "cpu"},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("main")
    cfg = {**CONFIG, "work": str(root / "work"),
           "data": {"pool": [str(tiny / "pool_tiny.jsonl.gz")], "benchmarks": str(tiny / "benchmarks_tiny.jsonl.gz"),
                    "domains": {"code_python": str(tiny / "domains" / "code_python.jsonl.gz"),
                                "math": str(tiny / "domains" / "math.jsonl.gz")}}}
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _run("run", "curate-and-grow", "--config", str(path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return root / "work", res


def test_every_stage_ran_and_fed_the_next(finished):
    work, res = finished
    kept = json.loads((work / "filtered" / "manifest.json").read_text())["meta"]["totals"]
    assert 0 < kept["docs_kept"] < kept["docs_in"] == 1404
    tokens = json.loads((work / "mixture" / "tokens" / "manifest.json").read_text())
    assert sorted(tokens["domains"]) == ["betr", "code_python", "math"]  # the selection is a domain
    m = json.loads((work / "mixture" / "mixture.json").read_text())
    assert m["preset"] == "tiny-128" and m["n_tokens"] == 8192  # h* for the series' last model
    stage2 = json.loads((work / "growth" / "stage-2" / "train.json").read_text())
    assert stage2["mixture"] == m["mixture"] and stage2["upsample"] == m["upsample"]  # trained on the fitted schedule
    assert stage2["init_from"].endswith("growth/stage-2/init")  # grown from stage 1
    for i in (1, 2):
        ev = json.loads((work / "growth" / f"eval-{i}" / "eval.json").read_text())
        assert "arc_easy" in ev["mc"] and ev["heldout"]["all"]["loss"] > 0
    assert not (work / "growth" / "eval-3").exists()  # unused slots evaluate nothing
    summary = json.loads((work / "summary" / "summary.json").read_text())
    assert summary["selection"]["docs_kept"] == kept["docs_kept"]
    assert summary["mixture"]["optimum"] == m["optimum"]["weights"]
    assert [s["preset"] for s in summary["series"]["stages"]] == ["tiny-64", "tiny-128"]
    assert [e["stage"] for e in summary["evaluation"]] == [1, 2]
    html = (work / "summary" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64" in html
    assert "## 4. Evaluation of the released models" in res.stdout


def test_rerun_resumes_without_retraining(finished):
    work, _ = finished
    runs = sorted(work.glob("**/summary.json"))
    stamp = {p: p.stat().st_mtime for p in runs if "summary/summary.json" not in str(p)}
    res = _run("run", "curate-and-grow", "--config", str(work.parent / "job.yaml"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in stamp} == stamp
