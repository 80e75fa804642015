"""The staged-growth series plan (SPEC §4): tokens per stage, FLOPs, learning rates, bad plans."""

import subprocess
import sys
from pathlib import Path

import pytest

from seedbed.growth.plan import PlanError, plan_series

REPO = Path(__file__).resolve().parents[1]


def test_paper_series_costs_what_8b_alone_costs():
    plan = plan_series(["1b", "2b", "4b", "8b"])  # 2× Chinchilla, nominal sizes
    assert plan.basis == "nominal"
    assert plan.series_flops == pytest.approx(15.36e21)  # SPEC §4: 15.4 ZFLOPs
    assert plan.separate_flops == pytest.approx(20.4e21)  # instead of 20.4
    assert plan.saving == pytest.approx(0.247, abs=1e-3)
    assert plan.series_flops == pytest.approx(plan.stages[-1].scratch_flops)
    assert [s.target_tokens for s in plan.stages] == [40e9, 80e9, 160e9, 320e9]
    # D_i = T_i − X_{i-1}·T_{i-1}/X_i
    assert [s.train_tokens for s in plan.stages] == [40e9, 60e9, 120e9, 240e9]
    assert [s.lr for s in plan.stages] == [1.5e-3, 1.1e-3, 7.0e-4, 3.0e-4]
    for s in plan.stages:  # after stage i the series has spent FLOPs(X_i, T_i): stage i is a fair release
        assert s.cumulative_flops == pytest.approx(s.scratch_flops)
    assert "saved 24.7%" in plan.table()


def test_non_embedding_basis_and_explicit_targets():
    plan = plan_series(["1b", "2b"], basis="non_embedding", tokens=[10**9, 3 * 10**9])
    x1, x2 = plan.stages[0].params, plan.stages[1].params
    assert 1.0e9 < x1 < 1.2e9 and 2.0e9 < x2 < 2.2e9  # non-embedding counts of the presets
    assert plan.stages[1].train_tokens == int((6 * x2 * 3e9 - 6 * x1 * 1e9) // (6 * x2))
    assert plan.stages[1].cumulative_flops == pytest.approx(6 * x2 * 3e9, rel=1e-9)


def test_tiny_presets_plan_on_non_embedding_counts_with_fixed_lr_and_fixed_data():
    plan = plan_series(["tiny-64", "tiny-128", "tiny-256"], vocab_size=4096, tokens_per_param=0.5, lr=1e-3,
                       fixed_data=True)
    assert plan.basis == "non_embedding" and {s.lr for s in plan.stages} == {1e-3}
    assert all(s.unique_tokens == plan.stages[-1].target_tokens for s in plan.stages)
    assert plan.series_tokens > plan.stages[-1].target_tokens  # so later stages repeat data
    assert "are repeats" in plan.table()


@pytest.mark.parametrize("kw,msg", [
    (dict(presets=["2b", "1b"]), "is not larger than stage 1"),
    (dict(presets=["1b"]), "at least two sizes"),
    (dict(presets=["1b", "2b"], tokens=[10**10, 10**9]), "stage 2 \\(2b\\) would train"),
    (dict(presets=["1b", "13b"]), "unknown model preset '13b'"),
    (dict(presets=["1b", "2b"], lr=[1e-3]), "1 learning rates for 2 stages"),
    (dict(presets=["1b", "2b"], lr=-1.0), "must be positive"),
    (dict(presets=["tiny-64", "tiny-128"], basis="nominal"), "has no nominal size"),
    (dict(presets=["1b", "2b"], tokens_per_param=0), "positive tokens_per_param"),
])
def test_impossible_plans_are_named(kw, msg):
    with pytest.raises(PlanError, match=msg):
        plan_series(**kw)


def test_plan_growth_cli_prints_the_table_and_fails_cleanly():
    run = lambda *a: subprocess.run([sys.executable, "-m", "seedbed.cli", "plan-growth", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=REPO, timeout=120)
    ok = run()
    assert ok.returncode == 0 and "15.4 ZFLOPs" in ok.stdout and "20.4 ZFLOPs" in ok.stdout
    bad = run("--series", "4b,2b")
    assert bad.returncode == 2 and "a series must grow" in bad.stderr
