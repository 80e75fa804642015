"""The mixture-fit pipeline's stages as plain functions: plan the sweep, run one proxy run,
collect the results table. Everything lives under ``work_uri``::

    sweep.json                the SweepPlan (written once; a different design needs a new work_uri)
    runs/<run_id>/            one training run each (seedbed.train: train.json, metrics.jsonl, summary.json)
    results/results.{csv,parquet}
"""

from __future__ import annotations

import json

from seedbed import store
from seedbed.corpus import reuse_finished
from seedbed.mixture.sweep import SweepError, SweepPlan, collect, design_sweep, run_settings, write_table

SWEEP = "sweep.json"


def plan_sweep(work_uri: str, tokens_uri: str, presets: list[str], tokens: list[int], settings: dict,
               heldout_presets: list[str] | None = None, heldout_tokens: list[int] | None = None,
               n_mixtures: int | None = None, min_weight: float = 0.1, eval_points: int = 5, seed: int = 0,
               domains: list[str] | None = None, overwrite: bool = False) -> list[str]:
    """Design the sweep over the token dataset's domains and write ``sweep.json``; returns one JSON
    item per run (what the pipeline's ParallelFor iterates over)."""
    from seedbed.train.tokens import open_tokens

    ds = open_tokens(tokens_uri)
    doms = sorted(domains) if domains else ds.domains
    unknown = sorted(set(doms) - set(ds.domains))
    if unknown:
        raise SweepError(f"unknown domain(s) {unknown}; the token dataset has {ds.domains}")
    params = {"tokens_uri": tokens_uri, "presets": list(presets), "tokens": [int(t) for t in tokens],
              "settings": settings, "heldout_presets": heldout_presets or [],
              "heldout_tokens": [int(t) for t in heldout_tokens or []], "n_mixtures": n_mixtures,
              "min_weight": min_weight, "eval_points": eval_points, "seed": seed, "domains": doms}
    uri = store.join(work_uri, SWEEP)
    done = reuse_finished(uri, params, overwrite, "a sweep design", SweepError)
    if done is None:
        plan = design_sweep(doms, presets, [int(t) for t in tokens], settings, ds.vocab_size, n_mixtures, min_weight,
                            eval_points, heldout_presets, heldout_tokens, seed=seed)
        done = {"params": params, "plan": plan.to_dict(), "table": plan.table()}
        store.write_json(uri, done)
    return [json.dumps({"work_uri": work_uri, "run_id": r["run_id"]}) for r in done["plan"]["runs"]]


def read_sweep(work_uri: str) -> tuple[dict, SweepPlan]:
    try:
        doc = store.read_json(store.join(work_uri, SWEEP))
    except store.NotFound:
        raise SweepError(f"no sweep design at {store.join(work_uri, SWEEP)}: run the plan step first") from None
    return doc, SweepPlan.from_dict(doc["plan"])


def run_item(item: str, mode: str = "local", spec: dict | None = None, log=print) -> str:
    """Train one proxy run of the sweep (idempotent: a finished run is not retrained); returns its out_uri."""
    from seedbed.launch import launch
    from seedbed.train.config import TrainConfig

    it = json.loads(item)
    doc, plan = read_sweep(it["work_uri"])
    run = next((r for r in plan.runs if r.run_id == it["run_id"]), None)
    if run is None:
        raise SweepError(f"run {it['run_id']} is not in the sweep at {it['work_uri']}")
    out = store.join(it["work_uri"], "runs", run.run_id)
    if store.exists(store.join(out, "summary.json")):
        log(f"[sweep] {run.run_id} already finished")
        return out
    cfg = TrainConfig.from_dict(run_settings(plan, run, doc["params"]["tokens_uri"], out))
    cfg_uri = store.join(out, "train.json")
    cfg.save(cfg_uri)
    launch(cfg_uri, mode, spec, log=log)  # local: torchrun here; cluster: a TrainJob named after the config
    return out


def collect_results(work_uri: str) -> dict:
    """Every finished run's evaluations as one table (``results/results.{csv,parquet}``)."""
    _, plan = read_sweep(work_uri)
    rows = collect(plan, work_uri)
    return {**write_table(rows, store.join(work_uri, "results")), "rows": len(rows),
            "runs": len(plan.runs), "domains": plan.domains}


def fit_stage(work_uri: str, table_uri: str, targets: list[str] | None = None, heldout: str = "auto",
              drop_invalid: bool = False) -> dict:
    """Fit both laws to every target on the sweep's fit runs, validate on its held-out runs (larger N,
    unseen mixtures); writes ``fit/fits.json``, ``fit/report.md`` (Table 2 layout + predicted-vs-observed plot).
    Returns their URIs, the MRE rows (``mre``) and the same numbers as named ``metrics``
    (``<target>_<law>_<split>_mre`` → float, e.g. ``mean_joint_heldout_mre``).

    ``table_uri``: any CSV/Parquet in the public layout (``weight_<domain>…, model_size, n_tokens,
    <domain>_loss…``). ``heldout``: ``"auto"`` (the sweep's ``heldout`` column when it marks rows,
    else no held-out set), ``"column"``, ``"largest_n"``, ``"mixtures"`` or ``"none"``."""
    import base64

    from seedbed.mixture.fit import FitError, compare_laws, fits_json, load_table, mre_table_markdown, plot_fit, \
        split_heldout

    table = load_table(table_uri, drop_invalid=drop_invalid)
    targets = targets or ["mean"]
    if heldout == "auto":
        heldout = "column" if "heldout" in table.extra and table.extra["heldout"].astype(bool).any() else "none"
    if heldout == "none":
        train, held = table, None
    elif heldout in ("column", "largest_n", "mixtures"):
        train, held = split_heldout(table, by=heldout)
    else:
        raise FitError(f"unknown held-out split {heldout!r}; use auto, column, largest_n, mixtures or none")
    rows = compare_laws(train, held, targets)
    out = store.join(work_uri, "fit")
    store.write_text(store.join(out, "fits.json"), fits_json(rows))
    png = plot_fit([r["joint"] for r in rows], train, held)
    store.write_bytes(store.join(out, "pred_vs_obs.png"), png)
    md = ["# Mixture-law fits", "", f"{len(train)} fit points, {len(held) if held is not None else 0} held-out points "
          f"over {len(table.domains)} domains ({', '.join(table.domains)}). MRE in %.", "", mre_table_markdown(rows), "",
          f"![predicted vs observed](data:image/png;base64,{base64.b64encode(png).decode()})", ""]
    store.write_text(store.join(out, "report.md"), "\n".join(md))
    mre = [{k: v for k, v in r.items() if k not in ("additive", "joint")} for r in rows]
    metrics = {f"{row['target']}_{k}_mre": float(v) for row in mre for k, v in row.items()
               if k != "target" and isinstance(v, (int, float))}
    return {"fits_uri": store.join(out, "fits.json"), "report_uri": store.join(out, "report.md"), "mre": mre,
            "metrics": metrics}


def read_joint_fit(fits_uri: str, target: str):
    """The joint-law :class:`~seedbed.mixture.fit.FitResult` of ``target`` in a ``fits.json`` of :func:`fit_stage`."""
    from seedbed.mixture.fit import FitError, FitResult

    rows = store.read_json(fits_uri)
    row = next((r for r in rows if r.get("target") == target), None)
    if row is None:
        raise FitError(f"no fit for target {target!r} in {fits_uri}; fitted: {[r.get('target') for r in rows]}")
    return FitResult.from_dict(row["joint"])


def optimize_stage(work_uri: str, fits_uri: str, target: str, preset: str, n_tokens: int, min_weight: float = 0.0,
                   max_repeats: float = 4.0, upsample_domains: list[str] | None = None,
                   upsample_fraction: float | None = None) -> dict:
    """h* for (N of ``preset``, ``n_tokens``) under the joint law, with per-domain bounds and the unique
    tokens each domain really has; writes ``mixture.json``: the TrainConfig fragment (mixture + upsample).

    Returns mixture.json's fields, its ``uri`` and the bare TrainConfig ``fragment``
    (``{"mixture", "upsample"}``: what the pipeline hands on as the schedule artifact)."""
    from seedbed.mixture.optimize import optimal_mixture, schedule
    from seedbed.train.presets import get_preset, param_count
    from seedbed.train.schedule import DEFAULT_UPSAMPLE_FRACTION
    from seedbed.train.tokens import open_tokens

    doc, plan = read_sweep(work_uri)
    fit = read_joint_fit(fits_uri, target)
    ds = open_tokens(doc["params"]["tokens_uri"])
    avail = {d: ds.num_tokens(d) for d in plan.domains}
    N = float(param_count(get_preset(preset), plan.vocab_size, embeddings=False))
    opt = optimal_mixture(fit, N, float(n_tokens), plan.domains, bounds={d: (min_weight, 1.0) for d in plan.domains},
                          available_tokens=avail, max_repeats=max_repeats)
    frac = upsample_fraction or DEFAULT_UPSAMPLE_FRACTION
    up = upsample_domains or sorted(opt.weights, key=lambda d: -opt.weights[d])[:1]
    sched = schedule(opt.weights, upweight={d: 2.0 for d in up}, fraction=frac, available_tokens=avail,
                     total_tokens=int(n_tokens), max_repeats=max_repeats)
    out = {**sched, "optimum": opt.to_dict(), "target": target, "preset": preset, "n_tokens": int(n_tokens)}
    uri = store.join(work_uri, "mixture.json")
    store.write_json(uri, out)
    return {"uri": uri, **out, "fragment": {"mixture": sched["mixture"], "upsample": sched["upsample"]}}


def verify_stage(work_uri: str, seeds: list[int] | None = None, mode: str = "local", spec: dict | None = None,
                 log=print, mixtures: list[str] | None = None) -> dict:
    """Train the optimum of ``mixture.json`` next to the uniform and natural mixtures at its (N, D),
    with the proxy runs' settings (constant lr), and compare observed with predicted target loss.

    Runs live under ``verify/<name>-s<seed>/``, and a finished one is not retrained; a sweep run with
    the same preset, tokens and mixture (seed 0) is reused. Writes ``verify/verify.json``."""
    import numpy as np

    from seedbed.launch import launch
    from seedbed.mixture.sweep import SweepRun, run_id
    from seedbed.train.config import TrainConfig
    from seedbed.train.presets import get_preset, param_count

    doc, plan = read_sweep(work_uri)
    try:
        m = store.read_json(store.join(work_uri, "mixture.json"))
    except store.NotFound:
        raise SweepError(f"no mixture.json under {work_uri}: run the optimize step first") from None
    fit = read_joint_fit(store.join(work_uri, "fit", "fits.json"), m["target"])
    opt = m["optimum"]
    candidates = {"optimal": opt["weights"], "uniform": opt["uniform"]["weights"]}
    if opt.get("natural"):
        candidates["natural"] = opt["natural"]["weights"]
    unknown = sorted(set(mixtures or []) - set(candidates))
    if unknown or (mixtures is not None and not {"optimal", "uniform"} <= set(mixtures)):
        raise SweepError(f"mixtures {mixtures}: choose among {sorted(candidates)}, 'optimal' and 'uniform' included")
    mixtures = {k: w for k, w in candidates.items() if mixtures is None or k in mixtures}
    N = float(param_count(get_preset(m["preset"]), plan.vocab_size, embeddings=False))
    batch = int(plan.settings.get("global_batch_tokens", TrainConfig.global_batch_tokens))
    tokens = int(m["n_tokens"]) // batch * batch
    sweep_seed = int(plan.settings.get("seed", TrainConfig.seed))
    by_id = {r.run_id: r for r in plan.runs}
    results = []
    for name, mix in mixtures.items():
        mix = {d: float(mix[d]) for d in plan.domains}
        for seed in seeds or [0]:
            rid = run_id(m["preset"], mix, tokens)
            out = store.join(work_uri, "runs", rid)
            if not (seed == sweep_seed and rid in by_id and store.exists(store.join(out, "summary.json"))):
                out = store.join(work_uri, "verify", f"{name}-s{seed}")
                if not store.exists(store.join(out, "summary.json")):
                    cfg = {**run_settings(plan, SweepRun(rid, m["preset"], mix, tokens), doc["params"]["tokens_uri"],
                                          out), "seed": seed, "name": f"verify-{name}-s{seed}"}
                    cfg_uri = store.join(out, "train.json")
                    TrainConfig.from_dict(cfg).save(cfg_uri)
                    log(f"[verify] training the {name} mixture (seed {seed}) at {m['preset']}, {tokens:,} tokens")
                    launch(cfg_uri, mode, spec, log=log)
            val = store.read_json(store.join(out, "summary.json"))["val_loss"]
            losses = np.array([val[d] for d in plan.domains])
            observed = float(losses.mean()) if m["target"] == "mean" else float(val[m["target"]])
            predicted = float(fit.predict(np.array([[mix[d] for d in plan.domains]]), np.array([N]),
                                          np.array([float(tokens)]))[0])
            results.append({"mixture": name, "seed": seed, "weights": mix, "observed": observed,
                            "predicted": predicted, "val_loss": {d: float(val[d]) for d in plan.domains},
                            "run_uri": out})
    obs = {name: float(np.mean([r["observed"] for r in results if r["mixture"] == name])) for name in mixtures}
    by = {(r["mixture"], r["seed"]): r["observed"] for r in results}
    summary = {"target": m["target"], "preset": m["preset"], "n_tokens": tokens, "seeds": seeds or [0],
               "runs": results, "mean_observed": obs,
               "optimal_minus_uniform": obs["optimal"] - obs["uniform"],
               "optimal_beats_uniform": obs["optimal"] < obs["uniform"],
               "seeds_optimal_beats_uniform": sum(by[("optimal", s)] < by[("uniform", s)] for s in seeds or [0])}
    store.write_json(store.join(work_uri, "verify", "verify.json"), summary)
    return summary


def settings_with_schedule(settings: dict, mixture_uri: str) -> dict:
    """``settings`` (TrainConfig fields) with ``mixture`` and ``upsample`` from a ``mixture.json``."""
    try:
        m = store.read_json(mixture_uri)
    except store.NotFound:
        raise SweepError(f"no mixture schedule at {mixture_uri}") from None
    clash = {"mixture", "upsample"} & set(settings)
    if clash:
        raise SweepError(f"{sorted(clash)} come from the fitted schedule {mixture_uri}; remove them from the settings")
    return {**settings, "mixture": m["mixture"], "upsample": m.get("upsample")}
