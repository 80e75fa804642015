"""The proxy sweep: design on the simplex, real tiny runs on real tokens, the collected table."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seedbed import store
from seedbed.mixture.sweep import SweepError, default_n_mixtures, design_sweep, simplex_design

REPO = Path(__file__).resolve().parents[1]
DOMS = ["code_python", "math", "wikipedia"]
SETTINGS = {"seq_len": 64, "global_batch_tokens": 1024, "micro_batch_size": 16, "warmup_steps": 2,
            "eval_tokens": 2048, "progress": False, "checkpoint_every": 0}


def test_simplex_design_is_spread_bounded_and_deterministic():
    mixes = simplex_design(DOMS, 10, min_weight=0.1, seed=0)
    assert mixes == simplex_design(DOMS, 10, min_weight=0.1, seed=0)
    H = np.array([[m[d] for d in DOMS] for m in mixes])
    assert np.allclose(H.sum(1), 1.0, atol=1e-9) and H.min() >= 0.1 - 1e-9
    assert np.allclose(H[0], 1 / 3)  # the uniform mixture first
    gaps = [np.linalg.norm(a - b) for a, b in itertools.combinations(H, 2)]
    assert min(gaps) > 0.1  # evenly spread, no near-duplicates
    assert H.max() > 0.7  # the corners are covered (max possible: 0.8)
    assert default_n_mixtures(3) == 10 and default_n_mixtures(7) == 20


@pytest.mark.parametrize("args,msg", [
    ((["a"], 5, 0.1), "at least two domains"),
    ((DOMS, 5, 0.4), "leaves no room"),
    ((DOMS, 0, 0.1), "at least one mixture"),
])
def test_bad_designs(args, msg):
    with pytest.raises(SweepError, match=msg):
        simplex_design(*args)


def test_design_counts_runs_and_flops():
    plan = design_sweep(DOMS, ["tiny-64", "tiny-128"], [10240, 10240], SETTINGS, 2048, n_mixtures=4,
                        heldout_presets=["tiny-256"], heldout_tokens=[10240], n_heldout_mixtures=2, eval_points=5)
    assert len(plan.runs) == 4 * 2 + 3 and sum(r.heldout for r in plan.runs) == 3
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    assert plan.eval_every == 2 and plan.flops > 0
    with pytest.raises(SweepError, match="fewer than the 5 evaluation points"):
        design_sweep(DOMS, ["tiny-64"], [3000], SETTINGS, 2048)
    with pytest.raises(SweepError, match="1 token budgets for 2 model sizes"):
        design_sweep(DOMS, ["tiny-64", "tiny-128"], [10240], SETTINGS, 2048)


def test_real_mini_sweep_collects_the_public_table(tiny_tokens, tmp_path):
    from seedbed.mixture.fit import load_table
    from seedbed.mixture.stages import collect_results, plan_sweep, run_item

    work = str(tmp_path / "sweep")
    items = plan_sweep(work, tiny_tokens, ["tiny-64"], [6144], SETTINGS, n_mixtures=2, eval_points=3,
                       domains=["math", "wikipedia"])
    assert len(items) == 2
    with pytest.raises(SweepError, match="have not finished"):
        collect_results(work)
    for it in items:
        run_item(it, "local", {"nodes": 1}, log=lambda *a: None)
    assert run_item(items[0], "local", log=lambda *a: None).endswith(json.loads(items[0])["run_id"])  # skipped
    out = collect_results(work)
    table = load_table(out["parquet"])  # the public layout: weight_<d>, model_size, n_tokens, <d>_loss
    assert table.domains == ["math", "wikipedia"] and set(table.losses) >= {"math", "wikipedia"}
    assert out["rows"] == len(table) == 2 * 3  # 6 steps, eval every 2 → steps 2, 4 and the final evaluation
    assert sorted(set(table.D.tolist())) == [2048, 4096, 6144] and np.allclose(table.H.sum(1), 1)
    assert np.all(table.losses["math"] > 0) and np.all(np.isfinite(table.losses["wikipedia"]))
    cfg = store.read_json(store.join(work, "runs", json.loads(items[0])["run_id"], "train.json"))
    assert cfg["lr_schedule"] == "constant" and cfg["eval_every"] == 2


def test_plan_sweep_cli_prints_the_design_and_flops(tiny_tokens):
    res = subprocess.run([sys.executable, "-m", "seedbed.cli", "plan-sweep", "--tokens-uri", tiny_tokens,
                          "--presets", "tiny-64,tiny-128", "--tokens", "20480,20480"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "FLOPs" in res.stdout and res.stdout.startswith("40 runs")  # 5 domains → 20 mixtures × 2 sizes


def test_fit_and_optimize_stages_on_a_sweep_table_from_a_known_law(tiny_tokens, tmp_path):
    """The pipeline's glue: a sweep design, its results table (losses from a known additive law, since
    a real sweep takes too long for a test), the fit stage, and the optimize stage's mixture.json."""
    from seedbed.mixture import laws
    from seedbed.mixture.stages import fit_stage, optimize_stage, plan_sweep, read_sweep
    from seedbed.mixture.sweep import write_table
    from seedbed.train.config import TrainConfig
    from seedbed.train.presets import get_preset, param_count

    work = str(tmp_path / "sweep")
    plan_sweep(work, tiny_tokens, ["tiny-64", "tiny-128"], [20480, 20480], SETTINGS, heldout_presets=["tiny-256"],
               heldout_tokens=[20480], n_mixtures=10, eval_points=5, domains=DOMS)
    _, plan = read_sweep(work)
    true = laws.AdditiveParams(E=1.5, C=np.array([2.0, 1.0, 3.0]), gamma=np.array([0.6, 0.9, 0.4]), A=40.0,
                               alpha=0.3, B=300.0, beta=0.35)
    rng = np.random.default_rng(0)
    rows = []
    for r in plan.runs:
        n = param_count(get_preset(r.preset), plan.vocab_size, embeddings=False)
        h = np.array([r.mixture[d] for d in plan.domains])
        for step in range(1, 6):
            d_tokens = step * 4096
            loss = float(laws.predict(true, h[None], np.array([n]), np.array([d_tokens]))[0])
            rows.append({"run_id": r.run_id, "heldout": r.heldout, "model_size": n, "n_tokens": d_tokens,
                         **{f"weight_{d}": r.mixture[d] for d in plan.domains},
                         **{f"{d}_loss": loss * (1 + 0.001 * rng.standard_normal()) for d in plan.domains}})
    table = write_table(rows, f"{work}/results")
    fit = fit_stage(work, table["parquet"], ["mean"])
    (row,) = fit["mre"]
    assert row["joint_train"] <= row["additive_train"] + 1e-9 and row["additive_train"] < 0.5
    # validated on the larger size's unseen mixtures: two fit sizes pin α loosely (SPEC §2: 0.3–4.5% at larger N)
    assert row["additive_heldout"] < 3.0
    assert fit["metrics"] == {f"mean_{k}_mre": row[k] for k in
                              ("additive_train", "joint_train", "additive_heldout", "joint_heldout")}
    assert "data:image/png;base64," in store.read_text(fit["report_uri"])
    out = optimize_stage(work, fit["fits_uri"], "mean", "tiny-256", 1_000_000, min_weight=0.05)
    TrainConfig.from_dict({"tokens_uri": "-", "out_uri": "-", "total_tokens": 1_000_000, "preset": "tiny-256",
                           "mixture": out["mixture"], "upsample": out["upsample"]})
    assert out["optimum"]["loss"] <= out["optimum"]["uniform"]["loss"] + 1e-9
    assert store.read_json(out["uri"])["mixture"] == out["mixture"]
    assert out["fragment"] == {"mixture": out["mixture"], "upsample": out["upsample"]}
