"""The staged-growth pipeline end to end through kfp.local on the tiny real domain corpora, via the CLI."""

import json

import pytest
from conftest import run_cli as _run
import yaml

ARGS = ["--tiny", "--series", "tiny-64,tiny-128", "--tokens", "16384,49152", "--vocab-size", "2048",
        "--seq-len", "64", "--global-batch-tokens", "1024", "--baselines"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny):
    work = tmp_path_factory.mktemp("growth")
    res = _run("run", "staged-growth", "--work", str(work), *ARGS)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return work, res


def test_series_stages_baselines_and_report(finished):
    work, res = finished
    plan = json.loads((work / "plan.json").read_text())["plan"]
    assert [s["preset"] for s in plan["stages"]] == ["tiny-64", "tiny-128"]
    for i in (1, 2):
        s = json.loads((work / f"stage-{i}" / "summary.json").read_text())
        assert (work / f"stage-{i}" / "model" / "model.safetensors").exists()
        assert s["preset"] == plan["stages"][i - 1]["preset"]
    assert json.loads((work / "stage-2" / "init" / "growth.json").read_text())["exact"]
    assert json.loads((work / "stage-2" / "train.json").read_text())["init_from"].endswith("stage-2/init")
    assert (work / "scratch-2" / "summary.json").exists() and not (work / "scratch-1").exists()
    assert not (work / "stage-3").exists()  # unused stage slots train nothing
    series = json.loads((work / "report" / "series.json").read_text())
    assert [r["scratch_val_loss"] is not None for r in series["stages"]] == [True, True]
    assert (work / "report" / "loss_vs_flops.png").read_bytes()[:4] == b"\x89PNG"
    assert "held-out loss (grown)" in res.stdout


def test_rerun_does_not_retrain_finished_stages(finished):
    work, _ = finished
    stamp = {p: p.stat().st_mtime for p in work.glob("*/summary.json")}
    res = _run("run", "staged-growth", "--work", str(work), *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in work.glob("*/summary.json")} == stamp
    assert res.stdout.count("already finished") + res.stderr.count("already finished") >= 3


def test_impossible_series_fails_before_any_task(tmp_path):
    res = _run("run", "staged-growth", "--work", str(tmp_path / "w"), "--tiny", "--series", "tiny-128,tiny-64")
    assert res.returncode == 2 and "a series must grow" in res.stderr
    assert not (tmp_path / "w").exists()


def test_compiled_pipeline_has_four_stage_slots(tmp_path):
    res = _run("compile", "--out", str(tmp_path), "--pipeline", "staged-growth")
    assert res.returncode == 0, res.stderr
    spec = next(yaml.safe_load_all((tmp_path / "staged_growth.yaml").read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert sum(t["componentRef"]["name"].startswith("comp-launch-training") for t in tasks.values()) == 8
    assert spec["root"]["inputDefinitions"]["parameters"]["series"]["defaultValue"] == "1b,2b,4b,8b"
