"""The mixture-fit pipeline end to end through kfp.local on the tiny real domain corpora, via the CLI:
proxy sweep (real tiny training runs) → results table → both laws fitted → h* and its schedule;
plus `seedbed fit-mixture` on a table in the public layout and the bad inputs of both."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli as _run

from seedbed.mixture.recovery import law_table

DOMS = ["code_python", "math"]
# 5 mixtures (= 2k+1 for k=2) × 2 sizes × (evaluations at 2,048 and 4,096 tokens + the final one) = 30 points
ARGS = ["--tiny", "--sweep-domains", ",".join(DOMS), "--n-mixtures", "5", "--presets", "tiny-64,tiny-128",
        "--tokens", "6144,6144", "--heldout-presets", "", "--heldout-tokens", "", "--eval-points", "3",
        "--seq-len", "64", "--global-batch-tokens", "1024", "--vocab-size", "1024", "--optimize-preset", "tiny-128",
        "--optimize-tokens", "6144", "--min-weight", "0.2", "--set", "eval_tokens=2048",
        "--verify-seeds", "0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny):
    work = tmp_path_factory.mktemp("mixture")
    res = _run("run", "mixture-fit", "--work", str(work), *ARGS)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return work, res


def test_sweep_table_fit_and_schedule(finished):
    work, res = finished
    plan = json.loads((work / "sweep.json").read_text())["plan"]
    assert len(plan["runs"]) == 10 and plan["domains"] == DOMS
    table = pd.read_csv(work / "results" / "results.csv")
    assert len(table) == 30 and set(table["run_id"]) == {r["run_id"] for r in plan["runs"]}
    assert set(table["n_tokens"]) == {2048, 4096, 6144}
    np.testing.assert_allclose(table[[f"weight_{d}" for d in DOMS]].sum(axis=1), 1.0)
    for d in DOMS:  # real held-out losses, falling with training
        assert table[f"{d}_loss"].between(1.0, 8.0).all()
        assert (table.groupby("run_id").apply(lambda g: g.sort_values("n_tokens")[f"{d}_loss"].iloc[-1]
                                              < g.sort_values("n_tokens")[f"{d}_loss"].iloc[0])).all()
    fits = json.loads((work / "fit" / "fits.json").read_text())
    row = fits[0]  # one entry per target
    assert row["target"] == "mean" and row["joint_train"] <= row["additive_train"] + 1e-9
    assert 0 < row["additive_train"] < 5
    assert (work / "fit" / "pred_vs_obs.png").read_bytes()[:4] == b"\x89PNG"
    m = json.loads((work / "mixture.json").read_text())
    w = m["mixture"]
    assert set(w) == set(DOMS) and abs(sum(w.values()) - 1) < 1e-6 and min(w.values()) >= 0.2 - 1e-6
    assert m["upsample"]["fraction"] == 0.15 and abs(sum(m["upsample"]["weights"].values()) - 1) < 1e-6
    from seedbed.train.config import TrainConfig

    TrainConfig.from_dict({"tokens_uri": "-", "out_uri": "-", "preset": "tiny-128", "total_tokens": 6144,
                           "seq_len": 64, "global_batch_tokens": 1024,
                           "mixture": m["mixture"], "upsample": m["upsample"]})  # the trainer takes it as is
    assert "Optimal mixture for tiny-128" in res.stdout and "uniform mixture" in res.stdout


def test_verify_trains_the_optimum_next_to_uniform_and_natural(finished):
    work, res = finished
    v = json.loads((work / "verify" / "verify.json").read_text())
    assert [(r["mixture"], r["seed"]) for r in v["runs"]] == [("optimal", 0), ("uniform", 0), ("natural", 0)]
    m = json.loads((work / "mixture.json").read_text())
    opt, uni = v["runs"][0], v["runs"][1]
    assert opt["weights"] == pytest.approx(m["optimum"]["weights"])
    # a mixture the sweep already trained at this (N, D) and seed is reused, any other is trained under verify/
    sweep = {r["run_id"]: r for r in json.loads((work / "sweep.json").read_text())["plan"]["runs"]}
    for r in v["runs"]:
        rid = r["run_uri"].rsplit("/", 1)[-1]
        if rid in sweep:
            assert sweep[rid]["preset"] == "tiny-128" and sweep[rid]["total_tokens"] == 6144
            assert sweep[rid]["mixture"] == pytest.approx(r["weights"], abs=1e-6)
        else:
            assert r["run_uri"].endswith(f"verify/{r['mixture']}-s0")
            assert json.loads((work / "verify" / f"{r['mixture']}-s0" / "train.json").read_text())["preset"] == "tiny-128"
    assert uni["run_uri"].rsplit("/", 1)[-1] in sweep  # the uniform mixture is the design's first
    for r in v["runs"]:  # observed = the trained run's mean held-out loss; predicted from the joint fit
        assert r["observed"] == pytest.approx(np.mean(list(r["val_loss"].values())))
        assert 1.0 < r["predicted"] < 10.0
    assert v["optimal_minus_uniform"] == pytest.approx(opt["observed"] - uni["observed"])
    assert "h* − uniform" in res.stdout


def test_rerun_skips_finished_runs(finished):
    work, _ = finished
    stamp = {p: p.stat().st_mtime for p in (work / "runs").glob("*/summary.json")}
    res = _run("run", "mixture-fit", "--work", str(work), *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in (work / "runs").glob("*/summary.json")} == stamp
    assert (res.stdout + res.stderr).count("already finished") == 10


@pytest.mark.parametrize("args, message", [
    (["--sweep-domains", "code_python,klingon"], "not among the corpora"),
    (["--targets", "mean,klingon"], "--targets names ['klingon']"),
    (["--optimize-target", "math"], "must be one of --targets"),
    (["--min-weight", "0.6"], "min_weight 0.6 leaves no room"),
    (["--tokens", "2048,2048"], "fewer than the 3 evaluation points"),
    (["--presets", "tiny-64", "--tokens", "6144,6144"], "2 token budgets for 1 model sizes"),
])
def test_bad_sweeps_fail_before_any_task(tmp_path, tiny, args, message):
    work = tmp_path / "w"
    res = _run("run", "mixture-fit", "--work", str(work), *ARGS, *args)
    assert res.returncode == 2, res.stderr[-2000:]
    assert message in res.stderr
    assert not work.exists()


@pytest.fixture(scope="module")
def public_table(tmp_path_factory):
    """A table in the public layout from known joint-law parameters (a recovery check on CLI input)."""
    df, _ = law_table(["web", "code", "math"], "joint", 9, (5e7, 1e8, 2e8, 4e8), (5, 10, 20), noise=1e-3, seed=2)
    path = tmp_path_factory.mktemp("public") / "runs.csv"
    df.to_csv(path, index=False)
    return df, path


def test_fit_mixture_on_a_public_layout_table(public_table, tmp_path):
    df, path = public_table
    res = _run("fit-mixture", str(path), "--out", str(tmp_path), "--targets", "mean,math", "--heldout", "largest_n")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((tmp_path / "fit" / "fits.json").read_text())
    assert [r["target"] for r in rows] == ["mean", "math"]
    for r in rows:  # recovered to the noise floor, on training points and at the held-out size
        assert r["joint_train"] < 0.5 and r["joint_heldout"] < 0.5, r
    assert "| Target |" in res.stdout and "fits:" in res.stdout


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d.assign(weight_web=d["weight_web"] + 0.05), "sum to"),
    (lambda d: d.assign(weight_code=d["weight_code"].where(d.index % 7 != 3)), "weight_code"),
    (lambda d: d.assign(math_loss=d["math_loss"].where(d.index % 5 != 1)), "math_loss"),
    (lambda d: d[(d["mixture"] < 2) & (d["model_size"] == 1e8)], "distinct (mixture, N, D) points"),
])
def test_fit_mixture_bad_tables(public_table, tmp_path, corrupt, message):
    df, _ = public_table
    bad = tmp_path / "bad.csv"
    corrupt(df.copy()).to_csv(bad, index=False)
    res = _run("fit-mixture", str(bad), "--out", str(tmp_path / "out"), "--targets", "math")
    assert res.returncode == 2, res.stdout[-1000:] + res.stderr[-2000:]
    assert message in res.stderr
    assert not (tmp_path / "out" / "fit" / "fits.json").exists()
