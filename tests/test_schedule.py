"""Mixture phases and learning-rate shapes (SPEC §3)."""

import math

import pytest

from seedbed.train.schedule import ScheduleError, build_schedule, check_weights, lr_factor

DOMAINS = ["code", "math", "web"]


def test_upsample_window_is_the_last_fraction_and_durations_sum():
    s = build_schedule(1000, 128, {"web": 0.8, "math": 0.1, "code": 0.1}, DOMAINS,
                       upsample={"weights": {"web": 0.4, "math": 0.4, "code": 0.2}, "fraction": 0.15})
    assert [p.name for p in s.phases] == ["base", "upsample"]
    assert [p.sequences for p in s.phases] == [850, 150]
    assert s.total_tokens == 1000 * 128
    assert s.phase_index(849) == 0 and s.phase_index(850) == 1
    d = s.describe()
    assert d[1]["start_token"] == 850 * 128 and d[1]["tokens"] == 150 * 128


def test_default_window_is_within_spec_range():
    s = build_schedule(100, 16, {"web": 1.0}, ["web"], upsample={"weights": {"web": 1.0}})
    frac = s.phases[1].sequences / s.total_sequences
    assert 0.10 <= frac <= 0.20


def test_explicit_token_phases_must_sum_to_the_run():
    phases = [{"name": "a", "tokens": 600 * 10, "weights": {"web": 1.0}},
              {"name": "b", "tokens": 400 * 10, "weights": {"math": 1.0}}]
    s = build_schedule(1000, 10, None, DOMAINS, phases=phases)
    assert [p.sequences for p in s.phases] == [600, 400]
    phases[1]["tokens"] = 300 * 10
    with pytest.raises(ScheduleError, match="sum to 9000 tokens, but the run trains 10000"):
        build_schedule(1000, 10, None, DOMAINS, phases=phases)


def test_fraction_rounding_keeps_the_total_exact():
    phases = [{"name": f"p{i}", "fraction": 1 / 3, "weights": {"web": 1.0}} for i in range(3)]
    s = build_schedule(100, 7, None, DOMAINS, phases=phases)
    assert sum(p.sequences for p in s.phases) == 100


@pytest.mark.parametrize("weights,msg", [
    ({"web": 0.5, "math": 0.4}, "sum to 0.9"),
    ({"web": 1.2, "math": -0.2}, "finite and >= 0"),
    ({"web": float("nan"), "math": 1.0}, "finite"),
    ({"web": 0.5, "books": 0.5}, "unknown domain"),
    ({}, "non-empty"),
    ({"web": "lots"}, "not a number"),
])
def test_bad_weights_are_named(weights, msg):
    with pytest.raises(ScheduleError, match=msg):
        check_weights(weights, DOMAINS, "mixture")


def test_window_outside_the_run_is_rejected():
    with pytest.raises(ScheduleError, match=r"fraction=1.0 must be in \(0, 1\)"):
        build_schedule(100, 8, {"web": 1.0}, DOMAINS, upsample={"weights": {"web": 1.0}, "fraction": 1.0})
    with pytest.raises(ScheduleError, match="shorter than one sequence"):
        build_schedule(10, 8, {"web": 1.0}, DOMAINS, upsample={"weights": {"web": 1.0}, "fraction": 0.01})


def test_lr_shapes():
    total, warm = 100, 10
    assert lr_factor(0, total, "cosine", warm) == pytest.approx(0.1)
    assert lr_factor(9, total, "cosine", warm) == pytest.approx(1.0)
    assert lr_factor(10, total, "cosine", warm) == pytest.approx(1.0)
    assert lr_factor(99, total, "cosine", warm, min_ratio=0.1) == pytest.approx(0.1)
    mids = [lr_factor(s, total, "cosine", warm) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(mids, mids[1:]))  # monotone decay after warmup
    assert {lr_factor(s, total, "constant", warm) for s in range(10, 100)} == {1.0}
    wsd = [lr_factor(s, total, "wsd", warm, min_ratio=0.0, decay_fraction=0.2) for s in range(total)]
    assert wsd[10:80] == [1.0] * 70 and wsd[99] == pytest.approx(0.0) and 0 < wsd[90] < 1
    with pytest.raises(ScheduleError, match="unknown lr schedule"):
        lr_factor(0, 10, "linear")
    assert not math.isnan(lr_factor(0, 1, "cosine", 0))
