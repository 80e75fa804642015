"""The train-lm pipeline end to end through kfp.local on the tiny real domain corpora, via the CLI."""

import json

import pytest
from conftest import run_cli as _run
import yaml

from seedbed import store

TINY_ARGS = ["--tiny", "--preset", "tiny-64", "--tokens", "65536", "--seq-len", "128", "--global-batch-tokens", "2048",
             "--vocab-size", "2048", "--eval-tasks", "arc_easy,piqa", "--eval-limit", "20"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny):
    work = tmp_path_factory.mktemp("trainlm")
    res = _run("run", "train-lm", "--work", str(work), *TINY_ARGS)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return work, res


def test_tokenize_train_evaluate(finished):
    work, res = finished
    manifest = store.read_json(str(work / "tokens" / "manifest.json"))
    assert sorted(manifest["domains"]) == ["books_gutenberg", "code_python", "math", "science_abstracts", "wikipedia"]
    cfg = json.loads((work / "train" / "train.json").read_text())
    assert cfg["tokens_uri"] == str(work / "tokens") and cfg["upsample"]["fraction"] == 0.15
    summary = json.loads((work / "train" / "summary.json").read_text())
    assert summary["tokens"] == 65536 and [p["name"] for p in summary["tokens_by_phase"]] == ["base", "upsample"]
    ev = json.loads((work / "eval" / "eval.json").read_text())
    assert ev["heldout"]["seq_len"] == 128  # the training sequence length, not the model's context
    assert set(ev["mc"]) == {"arc_easy", "piqa"} and ev["mc"]["piqa"]["n"] == 20
    assert "Training finished" in res.stdout and "Held-out loss per domain" in res.stdout


def test_rerun_reuses_every_stage(finished):
    work, _ = finished
    before = {p: p.stat().st_mtime for p in (work / "train" / "model").iterdir()}
    res = _run("run", "train-lm", "--work", str(work), *TINY_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "already finished" in res.stdout + res.stderr
    assert {p: p.stat().st_mtime for p in (work / "train" / "model").iterdir()} == before


@pytest.mark.parametrize("extra,msg", [
    (["--mixture", '{"wikipedia": 0.5, "math": 0.4}'], "sum to 0.9"),
    (["--preset", "70b"], "unknown model preset '70b'"),
    (["--seq-len", "4096"], "larger than preset 'tiny-64'"),
    (["--set", "zero_stage=5"], "zero_stage must be one of"),
])
def test_bad_settings_fail_before_any_task(tmp_path, extra, msg):
    res = _run("run", "train-lm", "--work", str(tmp_path / "w"), *TINY_ARGS, *extra)
    assert res.returncode == 2 and msg in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "w").exists()


def test_unknown_domain_in_the_mixture_fails_in_the_config_stage(tmp_path):
    res = _run("run", "train-lm", "--work", str(tmp_path / "w"), *TINY_ARGS,
               "--mixture", '{"wikipedia": 0.5, "news": 0.5}', "--upsample", "none")
    assert res.returncode == 1
    assert "unknown domain(s) ['news']" in res.stdout + res.stderr
    assert not (tmp_path / "w" / "train" / "checkpoints").exists()


def test_seedbed_train_runs_a_config_with_torchrun(tiny_tokens, tmp_path):
    cfg = {"tokens_uri": tiny_tokens, "out_uri": str(tmp_path / "out"), "preset": "tiny-64",
           "mixture": {"wikipedia": 0.5, "code_python": 0.5}, "seq_len": 64, "global_batch_tokens": 1024,
           "micro_batch_size": 8, "total_tokens": 4096, "progress": False}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    res = _run("train", "--config", str(tmp_path / "c.json"), "--nodes", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["world_size"] == 2
    res = _run("train", "--config", str(tmp_path / "c.json"), "--set", "mixture={\"wikipedia\": 2}")
    assert res.returncode == 2 and "finite and >= 0" not in res.stderr and "sum to 2" in res.stderr


def test_compiled_pipeline_runs_training_as_a_trainjob(tmp_path):
    res = _run("compile", "--out", str(tmp_path), "--pipeline", "train-lm")
    assert res.returncode == 0, res.stderr
    spec, platform = yaml.safe_load_all((tmp_path / "train_lm.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["mode"]["defaultValue"] == "cluster" and params["runtime"]["defaultValue"] == "torch-distributed"
    assert params["image"]["defaultValue"].endswith("seedbed-train:0.1.0")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"tokenize-domains", "write-train-config", "launch-training", "evaluate-model"}
    assert all(not t.get("cachingOptions", {}).get("enableCache", False) for t in tasks.values())
    # every task, the launcher included, reads the S3 settings from the Secret
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(k8s) == 4 and all(e["secretAsEnv"][0]["secretName"] == "seedbed-s3" for e in k8s.values())
