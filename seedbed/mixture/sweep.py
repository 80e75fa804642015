"""Proxy sweep for mixture laws (SPEC §2): which small runs to train, and their results as one table.

Design: mixtures spread evenly on the simplex with every weight ≥ ``min_weight`` (the uniform
mixture first, then greedy farthest-point picks from a dense seeded Dirichlet cloud, so the
design covers corners and edges as well as the centre), crossed with a small grid of model
sizes; each run trains at a constant learning rate and records every domain's held-out loss
every ``eval_every`` steps, so one run gives several token counts D.

Results: one row per (run, evaluation) in the public mixture-law layout —
``weight_<domain>…, model_size, n_tokens, <domain>_loss…`` (+ ``run_id``, ``preset``) — which
``seedbed.mixture.fit.load_table`` reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from seedbed import store
from seedbed.train.presets import get_preset, param_count


class SweepError(ValueError):
    """A sweep that cannot be designed or collected."""


def default_n_mixtures(k: int) -> int:
    """SPEC §2: ≈10 mixtures suffice for 3–4 domains, ≈20 for 6–8."""
    return 10 if k <= 4 else 20 if k <= 8 else 4 * k


def simplex_design(domains: list[str], n: int, min_weight: float = 0.1, seed: int = 0) -> list[dict[str, float]]:
    """``n`` mixtures evenly spread on {h : Σh = 1, h_i ≥ min_weight}; the uniform mixture first."""
    k = len(domains)
    if k < 2:
        raise SweepError(f"a mixture sweep needs at least two domains, got {domains}")
    if not 0 <= min_weight < 1 / k:
        raise SweepError(f"min_weight {min_weight} leaves no room: it must be below 1/k = {1 / k:.4f} for {k} domains")
    if n < 1:
        raise SweepError("a sweep needs at least one mixture")
    rng = np.random.default_rng(seed)
    free = 1.0 - k * min_weight
    cloud = min_weight + free * rng.dirichlet(np.ones(k), size=max(4000, 200 * n))
    corners = min_weight + free * np.eye(k)
    cloud = np.vstack([corners, cloud])
    chosen = [np.full(k, 1.0 / k)]
    dist = np.linalg.norm(cloud - chosen[0], axis=1)
    while len(chosen) < n:
        j = int(np.argmax(dist))
        chosen.append(cloud[j])
        dist = np.minimum(dist, np.linalg.norm(cloud - cloud[j], axis=1))
    out = []
    for h in chosen:
        h = np.round(h, 6)
        h[np.argmax(h)] += 1.0 - h.sum()  # exact sum after rounding
        out.append({d: float(w) for d, w in zip(domains, h)})
    return out


@dataclass
class SweepRun:
    run_id: str
    preset: str
    mixture: dict
    total_tokens: int
    heldout: bool = False  # a validation run (larger N / unseen mixture), not used for the fit


@dataclass
class SweepPlan:
    domains: list[str]
    runs: list[SweepRun]
    eval_every: int
    settings: dict
    vocab_size: int
    flops: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SweepPlan":
        d = dict(d)
        d["runs"] = [SweepRun(**r) for r in d["runs"]]
        return cls(**d)

    def table(self) -> str:
        lines = [f"{len(self.runs)} runs ({sum(not r.heldout for r in self.runs)} fit + "
                 f"{sum(r.heldout for r in self.runs)} held-out) over {len(self.domains)} domains, total "
                 f"{self.flops:.3g} FLOPs (6·N·D, N = non-embedding parameters)",
                 "run        preset    tokens  held-out  " + "  ".join(f"{d[:10]:>10}" for d in self.domains)]
        for r in self.runs:
            lines.append(f"{r.run_id}  {r.preset:>8}  {r.total_tokens:>8,}  {'yes' if r.heldout else '':>8}  "
                         + "  ".join(f"{r.mixture[d]:>10.3f}" for d in self.domains))
        return "\n".join(lines)


def run_id(preset: str, mixture: dict, tokens: int) -> str:
    key = json.dumps([preset, sorted(mixture.items()), tokens])
    return "r" + hashlib.sha256(key.encode()).hexdigest()[:8]


def design_sweep(domains: list[str], presets: list[str], tokens: list[int], settings: dict, vocab_size: int,
                 n_mixtures: int | None = None, min_weight: float = 0.1, eval_points: int = 5,
                 heldout_presets: list[str] | None = None, heldout_tokens: list[int] | None = None,
                 n_heldout_mixtures: int = 3, seed: int = 0) -> SweepPlan:
    """Every mixture × every (preset, tokens) pair for the fit, plus held-out runs at larger sizes
    on unseen mixtures. ``settings``: shared TrainConfig fields (seq_len, global_batch_tokens, ...)."""
    from seedbed.train.config import TrainConfig

    domains = sorted(domains)
    if len(presets) != len(tokens):
        raise SweepError(f"{len(tokens)} token budgets for {len(presets)} model sizes")
    n = n_mixtures or default_n_mixtures(len(domains))
    mixes = simplex_design(domains, n + n_heldout_mixtures, min_weight, seed)
    fit_mixes, new_mixes = mixes[:n], mixes[n:]
    batch = int(settings.get("global_batch_tokens", TrainConfig.global_batch_tokens))
    runs = []
    for p, t in zip(presets, tokens):
        steps = int(t) // batch
        if steps < eval_points:
            raise SweepError(f"{p}: {t:,} tokens is {steps} steps of {batch:,} tokens, fewer than the {eval_points} "
                             "evaluation points per run")
        runs += [SweepRun(run_id(p, m, steps * batch), p, m, steps * batch) for m in fit_mixes]
    for p, t in zip(heldout_presets or [], heldout_tokens or []):
        t = int(t) // batch * batch
        runs += [SweepRun(run_id(p, m, t), p, m, t, heldout=True) for m in new_mixes + fit_mixes[:1]]
    eval_every = max(1, min(int(t) // batch for t in tokens) // eval_points)
    flops = sum(6.0 * param_count(get_preset(r.preset), vocab_size, embeddings=False) * r.total_tokens for r in runs)
    plan = SweepPlan(domains, runs, eval_every, dict(settings), vocab_size, flops)
    for r in runs:  # every run's config must be valid before anything trains
        TrainConfig.from_dict(run_settings(plan, r, tokens_uri="-", out_uri="-"))
    return plan


#: how :func:`check_choices` names each choice in its messages (the CLI's flags; the job config passes its keys)
FLAGS = {"domains": "--sweep-domains", "targets": "--targets", "optimize_target": "--optimize-target",
         "upsample_domains": "--upsample-domains"}


def check_choices(corpora: list[str], mixed: list[str], targets: list[str], optimize_target: str,
                  upsample_domains: list[str], names: dict = FLAGS) -> list[str]:
    """A mixture fit's named choices, checked before anything runs: the swept domains are corpora,
    each target is 'mean' or a swept domain, h*'s target is fitted, the upsampled domains are swept.
    Returns every problem, each naming its choice as ``names`` spells it."""
    problems = [f"{names['domains']} names {d!r}, which is not among the corpora {sorted(corpora)}"
                for d in sorted(set(mixed) - set(corpora))]
    bad = sorted(set(targets) - set(mixed) - {"mean"})
    if bad:
        problems.append(f"{names['targets']} names {bad}: use 'mean' or one of the swept domains {mixed}")
    if optimize_target not in targets:
        problems.append(f"{names['optimize_target']} {optimize_target!r} must be one of {names['targets']} {targets}")
    bad = sorted(set(upsample_domains) - set(mixed))
    if bad:
        problems.append(f"{names['upsample_domains']} names {bad}, not among the swept domains {mixed}")
    return problems


def run_settings(plan: SweepPlan, run: SweepRun, tokens_uri: str, out_uri: str) -> dict:
    """The TrainConfig of one proxy run: constant lr after warmup (SPEC §2), held-out loss every ``eval_every`` steps."""
    return {**plan.settings, "tokens_uri": tokens_uri, "out_uri": out_uri, "name": run.run_id, "preset": run.preset,
            "mixture": run.mixture, "total_tokens": run.total_tokens, "lr_schedule": "constant",
            "eval_every": plan.eval_every, "upsample": None, "phases": None}


def collect(plan: SweepPlan, work_uri: str) -> list[dict]:
    """One row per (finished run, evaluation) in the public layout; unfinished runs are listed as missing."""
    rows, missing = [], []
    for r in plan.runs:
        out = store.join(work_uri, "runs", r.run_id)
        try:
            summary = store.read_json(store.join(out, "summary.json"))
            lines = store.read_text(store.join(out, "metrics.jsonl")).splitlines()
        except store.NotFound:
            missing.append(r.run_id)
            continue
        n = param_count(get_preset(r.preset), plan.vocab_size, embeddings=False)
        evals = [json.loads(x) for x in lines if '"val_loss"' in x]
        evals = [(e["tokens"], e["val_loss"]) for e in evals] + [(summary["tokens"], summary["val_loss"])]
        for d_tokens, vl in evals:
            row = {"run_id": r.run_id, "preset": r.preset, "heldout": r.heldout, "model_size": n,
                   "n_tokens": d_tokens}
            row.update({f"weight_{d}": r.mixture[d] for d in plan.domains})
            row.update({f"{d}_loss": vl[d] for d in plan.domains})
            rows.append(row)
    if missing:
        raise SweepError(f"{len(missing)} sweep run(s) have not finished: {missing[:10]}")
    return rows


def write_table(rows: list[dict], uri_prefix: str) -> dict:
    """``results.csv`` and ``results.parquet`` under ``uri_prefix``; returns their URIs."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not rows:
        raise SweepError("no sweep results to write")
    table = pa.Table.from_pylist(rows)
    out = {}
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    out["csv"] = store.join(uri_prefix, "results.csv")
    store.write_bytes(out["csv"], buf.getvalue())
    buf = io.BytesIO()
    pq.write_table(table, buf)
    out["parquet"] = store.join(uri_prefix, "results.parquet")
    store.write_bytes(out["parquet"], buf.getvalue())
    return out
