"""A two-stage growth series on real tokens through the library: plan → train → grow → train → report."""

import json
import math
import subprocess
import sys

import pytest

from seedbed import store
from seedbed.growth.plan import PlanError
from seedbed.growth.series import prepare_stage, read_plan, stage_uri, write_plan

SETTINGS = {"mixture": {"wikipedia": 0.5, "code_python": 0.25, "math": 0.25}, "seq_len": 64,
            "global_batch_tokens": 1024, "micro_batch_size": 16, "warmup_steps": 2, "checkpoint_every": 0,
            "eval_tokens": 2048, "progress": False}


def run_entry(cfg_uri: str) -> None:
    p = subprocess.run([sys.executable, "-m", "seedbed.train.entry", "--config", cfg_uri], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]


def metrics(run_uri):
    return [json.loads(x) for x in store.read_text(store.join(run_uri, "metrics.jsonl")).splitlines() if x]


@pytest.fixture(scope="module")
def series(tiny_tokens, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("series") / "work")
    doc = write_plan(work, tiny_tokens, ["tiny-64", "tiny-128"], SETTINGS, tokens=[16384, 40960])
    assert (doc["plan"]["width"], doc["plan"]["depth"]) == ("zero", "identity")  # exact and trainable
    with pytest.raises(PlanError, match="needs stage 1 finished first"):
        prepare_stage(work, 2)
    run_entry(prepare_stage(work, 1))
    cfg2 = prepare_stage(work, 2)
    run_entry(cfg2)
    return work, doc, cfg2


def test_plan_is_written_once_and_checked(series, tiny_tokens):
    work, doc, _ = series
    assert write_plan(work, tiny_tokens, ["tiny-64", "tiny-128"], SETTINGS, tokens=[16384, 40960]) == doc
    with pytest.raises(PlanError, match="different params"):
        write_plan(work, tiny_tokens, ["tiny-64", "tiny-256"], SETTINGS, tokens=[16384, 40960])
    with pytest.raises(PlanError, match="set per stage by the plan"):
        write_plan(work + "-x", tiny_tokens, ["tiny-64", "tiny-128"], {**SETTINGS, "lr": 1e-3}, tokens=[16384, 40960])
    _, plan = read_plan(work)
    s1, s2 = plan.stages
    assert s2.cumulative_flops == pytest.approx(s2.scratch_flops, rel=1e-4)  # D_2 is rounded down to a whole token
    assert prepare_stage(work, 3) == "" and prepare_stage(work, 1, scratch=True) == ""  # unused slots


def test_stage_two_starts_from_the_grown_model_with_fresh_data(series):
    work, doc, cfg2 = series
    cfg = store.read_json(cfg2)
    assert cfg["init_from"] == store.join(stage_uri(work, 2), "init") and cfg["preset"] == "tiny-128"
    growth = store.read_json(store.join(cfg["init_from"], "growth.json"))
    assert growth["preset"] == "tiny-128" and growth["source"].endswith("stage-1/model") and growth["exact"]
    m1, m2 = metrics(stage_uri(work, 1)), metrics(stage_uri(work, 2))
    # function-preserving growth: stage 2 starts near where stage 1 ended, far below a fresh init (ln 2048 = 7.6)
    assert m2[0]["loss"] < m1[0]["loss"] - 1.0
    assert abs(m2[0]["loss"] - m1[-1]["loss"]) < 0.5
    assert m2[0]["lr"] < m2[1]["lr"]  # a new warmup after growth
    s1 = store.read_json(store.join(stage_uri(work, 1), "summary.json"))
    s2 = store.read_json(store.join(stage_uri(work, 2), "summary.json"))
    assert s2["tokens"] == doc["plan"]["stages"][1]["train_tokens"] // 1024 * 1024
    # the second stage reads on where the first stopped: no repeats, cursors advanced past stage 1's
    assert s2["repeated_tokens"] == {}
    for d, (ep, pos) in s1["loader_end"]["cursor"].items():
        ep2, pos2 = s2["loader_end"]["cursor"][d]
        assert (ep2, pos2) >= (ep, pos)
    assert s2["plan"]["math"]["fresh_tokens"] < s1["plan"]["math"]["fresh_tokens"]


def test_fixed_data_repeats_and_counts(tiny_tokens, tmp_path):
    work = str(tmp_path / "fixed")
    write_plan(work, tiny_tokens, ["tiny-64", "tiny-128"], {**SETTINGS, "checkpoint_every": 0},
               tokens=[8192, 16384], fixed_data=True)
    cfg = store.read_json(prepare_stage(work, 1))
    assert cfg["max_unique_tokens"] == 16384 and cfg["on_exhausted"] == "repeat"


def test_series_report_plots_every_stage(series):
    from seedbed.growth.report import series_report

    work, _, _ = series
    r = series_report(work)
    assert [row["stage"] for row in r["stages"]] == [1, 2]
    assert all(math.isfinite(row["grown_val_loss"]) for row in r["stages"])
    md = store.read_text(r["report_uri"])
    assert "data:image/png;base64," in md and "| 2 | tiny-128 |" in md
    assert store.read_bytes(r["plot_uri"])[:4] == b"\x89PNG"
