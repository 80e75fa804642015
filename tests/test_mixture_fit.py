"""Mixture laws (SPEC §2): recovery from known parameters, validation, optimum and schedule.

The loss tables here are synthetic by construction: losses generated from *known* additive
(k=3) and joint (k=4) law parameters on mixtures spread over the simplex (every weight ≥ 0.1),
4 model sizes × 5 checkpoints, with 0.1% relative Gaussian noise. That is the point of a
recovery test — the fit must give back a law that reproduces the truth; no text is involved.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from seedbed.mixture import fit as F
from seedbed.mixture import laws
from seedbed.mixture.fit import FitError, FitWarning
from seedbed.mixture.optimize import optimal_mixture, round_weights, schedule
from seedbed.mixture.recovery import law_table, random_laws
from seedbed.mixture.sweep import simplex_design

SIZES = (5e7, 1e8, 2e8, 4e8)  # the largest is held out
TOKENS_PER_PARAM = (2.5, 5, 10, 20, 40)  # checkpoints of a constant-LR run
NOISE = 1e-3
# fast fit settings for the tests (the library defaults search harder)
ADD = dict(n_starts=2, niter=1)
JOINT = dict(n_starts=1, niter=1, maxiter=1000)
N_OPT, D_OPT = 1e9, 2e10  # the budget h* is computed for: beyond the fitted sizes


def make_frame(k: int, law: str, m: int = 12, seed: int = 0, noise: float = NOISE):
    doms = ["web", "code", "math", "books"][:k]
    df, truth = law_table(doms, law, m, SIZES, TOKENS_PER_PARAM, noise=noise, seed=seed)
    return df, truth, doms


def _fit_all(k, law):
    df, truth, doms = make_frame(k, law)
    table = F.load_table(df)
    train, held = F.split_heldout(table, "largest_n")
    fits = {}
    for t in doms + ["mean"]:
        add = F.fit_law(train, "additive", t, **ADD)
        fits[t] = (add, F.fit_law(train, "joint", t, warm_start=add, **JOINT))
    return {"df": df, "truth": truth, "domains": doms, "table": table, "train": train, "held": held, "fits": fits}


@pytest.fixture(scope="module")
def additive3():
    return _fit_all(3, "additive")


@pytest.fixture(scope="module")
def joint4():
    return _fit_all(4, "joint")


def _true_fit(law_params, domains, target) -> F.FitResult:
    return F.FitResult(law_params.law, target, domains, law_params, 0.0, 0.0, 0, 0, 1e-3, {}, {},
                       {"N0": 1.0, "D0": 1.0}, laws.to_theta(law_params))


# ----------------------------------------------------------------------------- the laws


def test_law_parameter_counts_reduction_and_gradients():
    rng = np.random.default_rng(1)
    k = 4
    assert laws.n_params("additive", k) == 13 and laws.n_params("joint", k) == 21
    assert len(laws.param_names("joint", list("abcd"))) == 21
    pa = random_laws(k, "additive", rng)[0]
    H = rng.dirichlet(np.ones(k), 30)
    H[0] = [0.0, 0.5, 0.5, 0.0]  # h_i = 0 contributes exactly 0
    N, D = rng.uniform(5e7, 5e8, 30), rng.uniform(1e9, 1e10, 30)
    La = laws.predict(pa, H, N, D)
    assert np.all(np.isfinite(La))
    # the joint law at γ_A = γ_B = 1, C^A_i = A, C^B_i = B is the additive law
    np.testing.assert_allclose(laws.predict(laws.additive_to_joint(pa), H, N, D), La, rtol=1e-13)
    # log-space parametrisation round trip (internal units N0, D0) and the analytic Jacobian
    pj = random_laws(k, "joint", rng)[1]
    N0, D0 = 2e8, 4e9
    X = laws.Design(H, np.log(N / N0), np.log(D / D0))
    for p in (pa, pj):
        th = laws.to_theta(p, N0, D0)
        np.testing.assert_allclose(laws.predict(laws.from_theta(th, p.law, k, N0, D0), H, N, D),
                                   laws.predict(p, H, N, D), rtol=1e-12)
        pred, J = laws.theta_predict_jac(th, p.law, X)
        np.testing.assert_allclose(pred, laws.predict(p, H, N, D), rtol=1e-12)
        eps = 1e-6
        Jn = np.stack([(laws.theta_predict(th + eps * e, p.law, X) - laws.theta_predict(th - eps * e, p.law, X))
                       / (2 * eps) for e in np.eye(th.size)], 1)
        np.testing.assert_allclose(J, Jn, atol=1e-7)
    # gradient in h
    h = np.array([0.4, 0.3, 0.2, 0.1])
    L, g = laws.predict_grad_h(pj, h, 1e9, 2e10)
    gn = [(laws.predict(pj, h + 1e-7 * e, 1e9, 2e10)[0] - laws.predict(pj, h - 1e-7 * e, 1e9, 2e10)[0]) / 2e-7
          for e in np.eye(k)]
    np.testing.assert_allclose(g, gn, rtol=1e-5)
    assert L == pytest.approx(laws.predict(pj, h, 1e9, 2e10)[0])
    # named parameters round trip
    d = pj.to_dict(list("abcd"))
    assert set(d["C_A"]) == set("abcd")
    back = laws.params_from_dict(d, list("abcd"))
    np.testing.assert_allclose(laws.predict(back, H, N, D), laws.predict(pj, H, N, D), rtol=1e-14)


def test_mre():
    assert F.mre([1.1, 0.9], [1.0, 1.0]) == pytest.approx(10.0)
    assert F.mre([2.0], [2.0]) == 0.0


# ----------------------------------------------------------------------------- recovery


def _hull(k):
    doms = [str(i) for i in range(k)]
    return np.array([[m[d] for d in doms] for m in simplex_design(doms, 200, 0.1, seed=9)])


def test_recovery_additive_k3(additive3):
    s = additive3
    hull = _hull(3)
    for t, (add, joint) in s["fits"].items():
        for f in (add, joint):
            assert f.train_mre < 0.5, (t, f.law, f.train_mre)
            assert F.evaluate(f, s["held"]) < 0.5, (t, f.law, "held-out N")
        if t == "mean":
            continue
        p, tp = add.params, s["truth"][t]
        # identifiable: the exponents of N and D, the mixture dependence E + 1/S(h) where the
        # runs sampled it, and the whole law at a larger scale than any run
        assert abs(p.alpha / tp.alpha - 1) < 0.15 and abs(p.beta / tp.beta - 1) < 0.03, (t, p, tp)
        mix = lambda q: q.E + 1 / (laws._mix_powers(hull, q.gamma) @ q.C)  # noqa: E731
        assert np.max(np.abs(mix(p) / mix(tp) - 1)) < 0.03, t
        Lf, Lt = laws.predict(p, hull, N_OPT, D_OPT), laws.predict(tp, hull, N_OPT, D_OPT)
        assert np.max(np.abs(Lf / Lt - 1)) < 0.005, t


def test_recovery_joint_k4_and_unseen_mixtures(joint4):
    s = joint4
    hull = _hull(4)
    for t, (add, joint) in s["fits"].items():
        assert joint.train_mre < 0.5, (t, joint.train_mre)
        assert F.evaluate(joint, s["held"]) < 0.5, (t, "held-out N")
        if t == "mean":
            continue
        p, tp = joint.params, s["truth"][t]
        assert abs(p.alpha / tp.alpha - 1) < 0.1 and abs(p.beta / tp.beta - 1) < 0.03, (t, p, tp)
        # 5× beyond the largest fitted N with the tests' short search: the joint law's 21
        # parameters extrapolate less tightly than the additive law's 11 (worst seen: 0.55%)
        Lf, Lt = laws.predict(p, hull, N_OPT, D_OPT), laws.predict(tp, hull, N_OPT, D_OPT)
        assert np.max(np.abs(Lf / Lt - 1)) < 0.01, t
    # the data come from a joint law: the additive law is misspecified and fits worse
    add_mre = np.mean([a.train_mre for a, _ in s["fits"].values()])
    assert add_mre > 2 * np.mean([j.train_mre for _, j in s["fits"].values()])
    # unseen mixtures: fit on 9 of the 12 mixtures, predict the other 3
    tr, ho = F.split_heldout(s["table"], "mixtures", n_heldout=3, seed=1)
    assert len(ho.mixtures()[0]) == 3 and len(tr.mixtures()[0]) == 9
    assert not set(map(tuple, ho.mixtures()[0].round(9))) & set(map(tuple, tr.mixtures()[0].round(9)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)  # 9 mixtures = 2k+1 for k=4: exactly enough
        j = F.fit_law(tr, "joint", "code", **JOINT, warm_start=F.fit_law(tr, "additive", "code", **ADD))
    assert j.train_mre < 0.5 and F.evaluate(j, ho) < 0.5


def test_joint_objective_never_worse_than_additive(additive3, joint4):
    for s in (additive3, joint4):
        for t, (add, joint) in s["fits"].items():
            assert joint.objective <= add.objective * (1 + 1e-9), (t, add.objective, joint.objective)
            if t in s["truth"]:  # converged: at least as good as the true parameters (a feasible point)
                right = add if s is additive3 else joint
                assert right.objective <= F.objective(s["truth"][t], s["train"], t) * (1 + 1e-6), t
            assert joint.convergence["additive_objective"] == add.objective
            assert joint.n_params == 5 + 4 * len(s["domains"]) and add.n_params == 5 + 2 * len(s["domains"])


def test_optimal_mixture_recovered(additive3, joint4):
    for s, l1_max, regret_max in ((additive3, 0.05, 1e-4), (joint4, 0.25, 2.5e-3)):
        for t in s["domains"]:
            add, joint = s["fits"][t]
            fitted = add if s is additive3 else joint
            truth = _true_fit(s["truth"][t], s["domains"], t)
            o = optimal_mixture(fitted, N_OPT, D_OPT)
            ot = optimal_mixture(truth, N_OPT, D_OPT)
            assert abs(sum(o.weights.values()) - 1) < 1e-12 and min(o.weights.values()) >= 0
            assert np.abs(o.h - ot.h).sum() < l1_max, (t, o.weights, ot.weights)
            regret = laws.predict(s["truth"][t], o.h, N_OPT, D_OPT)[0] / ot.loss - 1
            assert regret < regret_max, (t, regret)
            assert o.loss <= o.uniform["loss"] + 1e-12
    # the three methods agree on the optimum
    f = joint4["fits"]["code"][1]
    hs = [optimal_mixture(f, N_OPT, D_OPT, method=m, n_starts=3).h for m in ("auto", "mirror", "slsqp")]
    assert np.abs(hs[0] - hs[1]).max() < 1e-4 and np.abs(hs[0] - hs[2]).max() < 1e-4


def test_optimal_mixture_constraints_and_infeasible(additive3):
    fit = additive3["fits"]["web"][0]
    D = 1e10
    avail = {"web": 5e9, "code": 3e9, "math": 4e9}  # math is the scarce one at D = 1e10 tokens
    o = optimal_mixture(fit, 1e9, D, available_tokens=avail, max_repeats=1.0, bounds={"code": (0.05, 0.5)})
    for d, w in o.weights.items():
        assert w * D <= avail[d] * (1 + 1e-9), (d, w)
    assert o.weights["code"] >= 0.05 - 1e-12
    assert o.natural is not None and o.natural["weights"]["web"] == pytest.approx(5 / 12)
    assert o.loss <= o.natural["loss"] + 1e-12 and o.uniform["feasible"] is False  # 1/3 of 1e10 > 3e9 code tokens
    # excluded domains get 0
    o2 = optimal_mixture(fit, 1e9, D, domains=["web", "code"])
    assert o2.weights["math"] == 0 and abs(o2.weights["web"] + o2.weights["code"] - 1) < 1e-12
    # more passes over the data relax the caps
    o3 = optimal_mixture(fit, 1e9, D, available_tokens=avail, max_repeats=4.0)
    assert o3.loss <= o.loss + 1e-12
    with pytest.raises(FitError, match=r"sum to 1.2 > 1"):
        optimal_mixture(fit, 1e9, D, bounds={"web": (0.6, 1), "code": (0.6, 1)})
    with pytest.raises(FitError, match=r"'code' needs at least 0.5 but is limited to 0.3 .*available"):
        optimal_mixture(fit, 1e9, D, bounds={"code": (0.5, 1)}, available_tokens=avail)
    with pytest.raises(FitError, match=r"at most 0.6 of the mixture.*raise max_repeats"):
        optimal_mixture(fit, 1e9, D, available_tokens={"web": 1e9, "code": 2e9, "math": 3e9})
    with pytest.raises(FitError, match="unknown domain"):
        optimal_mixture(fit, 1e9, D, domains=["web", "cooking"])


def test_schedule_is_accepted_by_the_trainer(additive3):
    from seedbed.train.config import TrainConfig
    from seedbed.train.schedule import DEFAULT_UPSAMPLE_FRACTION, build_schedule, check_weights

    s = additive3
    base = optimal_mixture(s["fits"]["mean"][0], N_OPT, D_OPT)  # general LM quality
    targeted = optimal_mixture(s["fits"]["math"][0], N_OPT, D_OPT)  # the targeted loss
    for sched in (schedule(base, targeted), schedule(base, upweight={"math": 3.0, "code": 2.0})):
        assert set(sched) == {"mixture", "upsample"}
        assert sched["upsample"]["fraction"] == DEFAULT_UPSAMPLE_FRACTION
        check_weights(sched["mixture"], s["domains"], "mixture")
        check_weights(sched["upsample"]["weights"], s["domains"], "upsample")
        cfg = TrainConfig.from_dict({"tokens_uri": "/nowhere/tokens", "out_uri": "/nowhere/run",
                                     "total_tokens": 1_000_000, **sched})
        assert cfg.mixture == sched["mixture"]
        build_schedule(cfg.total_steps * cfg.global_batch_sequences, cfg.seq_len, cfg.mixture, s["domains"],
                       cfg.upsample)
    up = schedule(base, upweight={"math": 3.0})["upsample"]["weights"]
    assert up["math"] > base.weights["math"] and up["math"] / up["web"] == pytest.approx(
        3 * base.weights["math"] / base.weights["web"], rel=1e-4)
    # the window is capped by the math data left after the base phase; the excess goes elsewhere
    T = 1e10
    math_avail = T * (0.85 * base.weights["math"] + 0.15 * base.weights["math"] * 1.5)
    capped = schedule(base, upweight={"math": 3.0}, available_tokens={"math": math_avail}, total_tokens=T)
    used = T * (0.85 * capped["mixture"]["math"] + 0.15 * capped["upsample"]["weights"]["math"])
    assert used <= math_avail * (1 + 1e-5)
    check_weights(capped["upsample"]["weights"], s["domains"], "upsample")
    assert schedule(base) == {"mixture": round_weights(base.weights)}
    # rounding: awkward weights still sum to 1 within check_weights' 1e-6
    w = round_weights({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3 + 1e-4, "d": 1e-9})
    assert abs(sum(w.values()) - 1) < 1e-12 and "d" not in w
    with pytest.raises(FitError, match="base weight is 0"):
        schedule({"web": 1.0, "code": 0.0}, upweight={"code": 2.0})
    with pytest.raises(FitError, match="fraction"):
        schedule(base, targeted, fraction=1.5)


# ----------------------------------------------------------------------------- inputs


def _small_frame(n_mix=12, seed=3):
    df, _, _ = make_frame(3, "additive", m=n_mix, seed=seed)
    return df


def test_bad_tables_give_clear_errors():
    df = _small_frame()
    bad = df.copy()
    bad.loc[[3, 7], "weight_web"] += 0.05
    with pytest.raises(FitError, match=r"sum to 1 \(±0.001\); rows \[3, 7\] \(2 rows\).*row 3: 1.05"):
        F.load_table(bad)
    bad = df.copy()
    bad.loc[[2, 9], ["weight_web", "weight_code", "weight_math"]] *= 100
    with pytest.raises(FitError, match="percentages"):
        F.load_table(bad.loc[[2, 9]])
    bad = df.copy()
    bad.loc[5, "weight_code"] = np.nan
    with pytest.raises(FitError, match=r"domain 'code': weight missing .* rows \[5\]"):
        F.load_table(bad)
    bad = df.copy()
    bad.loc[4, "weight_code"], bad.loc[4, "weight_web"] = -0.1, bad.loc[4, "weight_web"] + 0.1
    with pytest.raises(FitError, match=r"negative mixture weights in rows \[4\]"):
        F.load_table(bad)
    bad = df.copy()
    bad.loc[[1, 8], "math_loss"] = [np.nan, -1.0]
    bad.loc[6, "web_loss"] = np.inf
    with pytest.raises(FitError, match=r"web_loss: rows \[6\].*math_loss: rows \[1, 8\].*drop_invalid=True"):
        F.load_table(bad)
    with pytest.warns(FitWarning, match=r"dropped 3 of 240 rows .*math_loss: rows \[1, 8\]"):
        t = F.load_table(bad, drop_invalid=True)
    assert len(t) == 237 and not set(t.rows) & {1, 6, 8}
    bad = df.copy()
    bad.loc[0, "model_size"] = 0
    with pytest.raises(FitError, match=r"model_size \(N\) must be finite and > 0; rows \[0\]"):
        F.load_table(bad)
    with pytest.raises(FitError, match="lacks a 'n_tokens' column"):
        F.load_table(df.drop(columns=["n_tokens"]))
    with pytest.raises(FitError, match=r"no loss column for target 'cooking'"):
        F.fit_law(F.load_table(df), "additive", "cooking")


def test_too_few_runs_for_the_parameters():
    df = _small_frame()
    # 3 mixtures × 1 size × 4 checkpoints = 12 points < the joint law's 17 parameters (k=3)
    few = df[df["mixture"].isin([0, 1, 2]) & (df["model_size"] == 1e8)].iloc[
        [i for i in range(15) if i % 5 != 4]]
    t = F.load_table(few)
    with pytest.raises(FitError, match=r"12 distinct \(mixture, N, D\) points for the joint law's 17 parameters"):
        F.fit_law(t, "joint", "web")
    # enough points for the additive law's 11, but 3 mixtures cannot pin its mixture term (2k+1 = 7)
    with pytest.warns(FitWarning, match=r"3 distinct mixtures for 3 domains.*2k\+1=7"):
        F.fit_law(t, "additive", "web", n_starts=1, niter=0, n_screen=2, screen_iter=20)
    with pytest.raises(FitError, match="cannot hold out by model size"):
        F.split_heldout(t, "largest_n")


def test_targets_mean_and_weighted():
    t = F.load_table(_small_frame())
    mean = t.target_values("mean")
    np.testing.assert_allclose(mean, (t.losses["web"] + t.losses["code"] + t.losses["math"]) / 3)
    w = t.target_values({"code": 0.25, "math": 0.75})
    np.testing.assert_allclose(w, 0.25 * t.losses["code"] + 0.75 * t.losses["math"])
    np.testing.assert_allclose(t.target_values("code_loss"), t.losses["code"])
    with pytest.raises(FitError, match="finite and >= 0"):
        t.target_values({"code": -1})


def test_split_heldout_variants():
    df = _small_frame()
    df["heldout"] = df["model_size"] >= 4e8  # as the proxy sweep's results table marks its held-out runs
    t = F.load_table(df)
    tr, ho = F.split_heldout(t, "column")
    assert len(ho) == 60 and np.all(ho.N == 4e8) and np.all(tr.N < 4e8)
    tr2, ho2 = F.split_heldout(t, "largest_n")
    np.testing.assert_array_equal(ho2.rows, ho.rows)
    tr3, ho3 = F.split_heldout(t, "mixtures", frac=0.25, seed=0)
    assert len(ho3.mixtures()[0]) == 3 and len(tr3) + len(ho3) == len(t)
    with pytest.raises(FitError, match="no column 'split'"):
        F.split_heldout(t, "column", column="split")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_public_layout_round_trip(tmp_path, fmt):
    df = _small_frame()
    path = tmp_path / f"losses.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    t = F.load_table(str(path))
    assert t.domains == ["web", "code", "math"] and sorted(t.losses) == ["code", "math", "web"]
    np.testing.assert_allclose(t.H, df[["weight_web", "weight_code", "weight_math"]].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(t.N, df["model_size"].to_numpy())
    np.testing.assert_allclose(t.losses["math"], df["math_loss"].to_numpy(), rtol=1e-15)
    assert list(t.extra["run_id"]) == list(df["run_id"])
    # write_table → load_table keeps every value (to the last bit but renormalisation's), via file:// too
    out = tmp_path / f"again.{fmt}"
    F.write_table(t, f"file://{out}")
    t2 = F.load_table(str(out))
    np.testing.assert_allclose(t2.H, t.H, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(t2.losses["web"], t.losses["web"])
    np.testing.assert_array_equal(t2.D, t.D)
    with pytest.raises(FitError, match="does not exist"):
        F.load_table(str(tmp_path / "missing.csv"))


def test_reports_and_persistence(tmp_path, joint4):
    s = joint4
    rows = []
    for t in ("web", "mean"):
        add, joint = s["fits"][t]
        rows.append({"target": t, "additive": add, "joint": joint, "additive_train": add.train_mre,
                     "joint_train": joint.train_mre, "additive_heldout": F.evaluate(add, s["held"]),
                     "joint_heldout": F.evaluate(joint, s["held"])})
    md = F.mre_table_markdown(rows)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| Target | Additive train MRE % | Additive held-out MRE % | Joint train MRE %")
    assert len(lines) == 2 + 2 + 1 and lines[-1].startswith("| **Average** |")
    png = F.plot_fit([s["fits"]["web"][0], s["fits"]["web"][1]], s["train"], s["held"], title="web")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    joint = s["fits"]["web"][1]
    uri = str(tmp_path / "fit.json")
    joint.save(uri)
    back = F.FitResult.load(uri)
    np.testing.assert_allclose(back.predict_table(s["held"]), joint.predict_table(s["held"]), rtol=1e-12)
    assert back.law == "joint" and back.named_params["C_A"].keys() == {"web", "code", "math", "books"}
    assert {"warm_start", "basinhopping", "polish", "total"} <= set(joint.seconds)
    assert joint.convergence["runs"][0]["start"] == "warm_start" and joint.convergence["nfev"] > 0
