"""Fitting the mixture laws to a table of runs (SPEC §2).

Input: one row per (run, checkpoint) in the layout public mixture-law data uses::

    weight_<domain>…, model_size, n_tokens, <domain>_loss…   (extra columns are kept, unused)

``weight_*`` columns define the mixture domains (on the simplex), ``model_size`` is N
(parameters), ``n_tokens`` is D (training tokens seen at that checkpoint) and every
``<name>_loss`` column is a possible target — mixture domains and held-out evaluation sets alike.

Validation (:func:`load_table`, :func:`table_from_frame`) raises :class:`FitError` naming the rows
(0-based data rows, header excluded) for: a missing ``weight_<domain>`` value, negative weights,
weights not summing to 1 (tolerance 1e-3; rows are then renormalised exactly so that Σh = 1), N
or D missing or ≤ 0, and NaN/inf/≤ 0 losses. Bad losses are an error unless
``drop_invalid=True``, which drops those rows with a :class:`FitWarning` listing rows and columns.
A fit with fewer distinct (mixture, N, D) points than the law has parameters is an error
("12 points for the joint law's 21 parameters"); fewer distinct mixtures than the 2k+1
parameters of the mixture term (E, C_i, γ_i) is a warning: the mixture dependence is then
underdetermined however many checkpoints each run has.

Targets: ``"<domain>"`` (its ``<domain>_loss`` column), ``"mean"`` (the mean of the mixture
domains' losses; of all loss columns when no mixture domain has one) or ``{name: w}`` (the
weighted sum Σ w·loss, e.g. a benchmark-like text mix; w ≥ 0, not renormalised).

The fit minimises (1/p) Σ_j Huber_δ(L_j − L̂_j) (δ = 1e-3, on the raw losses) over the
log-space parameters of :mod:`seedbed.mixture.laws`: a random search over broad log-uniform
ranges, a short L-BFGS-B descent from the best draws to rank them (screening), then
``scipy.optimize.basinhopping`` with an analytic-gradient L-BFGS-B inner minimiser from the
best ``n_starts``; the winner is polished (L-BFGS-B, then trust-region Gauss-Newton on the same
Huber objective). Internally the objective is divided by δ² (so L-BFGS-B's tolerances,
relative to max(|f|, 1), do not stop it early on an objective of order 1e-6). The whole fit
runs with one BLAS thread (threadpoolctl): the algebra is tiny and a threaded BLAS only spins.
A joint fit starts from the additive fit mapped into the joint law
(:func:`seedbed.mixture.laws.additive_theta_to_joint`, the same predictions) and keeps that
warm start if optimisation does not beat it, so its training objective is never worse than the
additive fit's (up to float rounding, ~1e-15 relative).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seedbed import store
from seedbed.mixture import laws
from seedbed.mixture.laws import LAWS, Design, LawParams, n_params

WEIGHT_PREFIX = "weight_"
LOSS_SUFFIX = "_loss"
N_COL, D_COL = "model_size", "n_tokens"
WEIGHT_TOL = 1e-3


class FitError(ValueError):
    """A table or request the laws cannot be fitted to; the message says what to fix."""


class FitWarning(UserWarning):
    """A fit that runs but deserves a look (dropped rows, underdetermined mixture term)."""


def _rows(idx, limit: int = 12) -> str:
    idx = [int(i) for i in idx]
    s = ", ".join(map(str, idx[:limit]))
    return f"[{s}{', …' if len(idx) > limit else ''}] ({len(idx)} row{'s' if len(idx) != 1 else ''})"


# ----------------------------------------------------------------------------- the table


@dataclass
class MixtureTable:
    """A validated loss table: mixtures ``H`` [n, k] (rows sum to 1), ``N``, ``D`` [n] and loss
    columns ``losses[name]`` [n]; ``rows`` are the source's 0-based data-row numbers."""

    domains: list[str]
    H: np.ndarray
    N: np.ndarray
    D: np.ndarray
    losses: dict[str, np.ndarray]
    rows: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.N)

    @property
    def k(self) -> int:
        return len(self.domains)

    @property
    def loss_names(self) -> list[str]:
        return list(self.losses)

    def subset(self, sel) -> "MixtureTable":
        sel = np.asarray(sel)
        if sel.dtype == bool and sel.shape != (len(self),):
            raise ValueError(f"boolean selection of shape {sel.shape} for a table of {len(self)} rows")
        return MixtureTable(list(self.domains), self.H[sel], self.N[sel], self.D[sel],
                            {c: v[sel] for c, v in self.losses.items()}, self.rows[sel],
                            {c: v[sel] for c, v in self.extra.items()})

    def mixtures(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct mixtures [m, k] and each row's mixture index [n]."""
        u, inv = np.unique(np.round(self.H, 9), axis=0, return_inverse=True)
        return u, inv.reshape(-1)

    def n_distinct_points(self) -> int:
        key = np.column_stack([np.round(self.H, 9), np.round(np.log(self.N), 9), np.round(np.log(self.D), 9)])
        return len(np.unique(key, axis=0))

    def target_values(self, target) -> np.ndarray:
        """The loss the law is fitted to: see the module docstring for ``target``."""
        if isinstance(target, dict):
            if not target:
                raise FitError("a weighted target needs at least one {name: weight}")
            out = np.zeros(len(self))
            for name, w in target.items():
                w = float(w)
                if not math.isfinite(w) or w < 0:
                    raise FitError(f"target weight of {name!r} is {w}; weights must be finite and >= 0")
                out = out + w * self._loss(name)
            if not np.any(out > 0):
                raise FitError(f"target {target} is zero everywhere (all weights 0?)")
            return out
        if target == "mean":
            names = [d for d in self.domains if d in self.losses] or list(self.losses)
            return np.mean([self.losses[d] for d in names], axis=0)
        return self._loss(target)

    def _loss(self, name) -> np.ndarray:
        name = str(name)
        if name in self.losses:
            return self.losses[name]
        if name.endswith(LOSS_SUFFIX) and name[: -len(LOSS_SUFFIX)] in self.losses:
            return self.losses[name[: -len(LOSS_SUFFIX)]]
        raise FitError(f"no loss column for target {name!r}: the table has {sorted(self.losses)} "
                       f"(columns {', '.join(n + LOSS_SUFFIX for n in sorted(self.losses))}), or use 'mean'")

    def to_frame(self):
        """The public layout as a pandas DataFrame (weights, model_size, n_tokens, losses, extras)."""
        import pandas as pd

        cols = {WEIGHT_PREFIX + d: self.H[:, i] for i, d in enumerate(self.domains)}
        cols[N_COL], cols[D_COL] = self.N, self.D
        cols.update({n + LOSS_SUFFIX: v for n, v in self.losses.items()})
        cols.update(self.extra)
        return pd.DataFrame(cols)


def target_label(target) -> str:
    if isinstance(target, dict):
        return "+".join(f"{float(w):g}·{n}" for n, w in target.items())
    return str(target)


def table_from_frame(df, *, drop_invalid: bool = False, weight_tol: float = WEIGHT_TOL) -> MixtureTable:
    """Validate a pandas DataFrame in the public layout (see the module docstring)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    df = df.reset_index(drop=True)
    cols = [str(c) for c in df.columns]
    df.columns = cols
    wcols = [c for c in cols if c.startswith(WEIGHT_PREFIX) and len(c) > len(WEIGHT_PREFIX)]
    lcols = [c for c in cols if c.endswith(LOSS_SUFFIX) and len(c) > len(LOSS_SUFFIX)]
    missing = [what for what, ok in (("weight_<domain> columns", wcols), (f"a {N_COL!r} column", N_COL in cols),
                                     (f"a {D_COL!r} column", D_COL in cols), ("<name>_loss columns", lcols)) if not ok]
    if missing:
        raise FitError(f"the table lacks {', '.join(missing)}; expected the layout weight_<domain>…, {N_COL}, "
                       f"{D_COL}, <domain>_loss… — got columns {cols}")
    if len(df) == 0:
        raise FitError("the table has no rows")
    domains = [c[len(WEIGHT_PREFIX):] for c in wcols]

    def numeric(c):
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(df[c].notna().to_numpy() & np.isnan(v))
        if len(bad):
            raise FitError(f"column {c!r} has non-numeric values in rows {_rows(bad)}, e.g. {df[c].iloc[bad[0]]!r}")
        return v

    H = np.column_stack([numeric(c) for c in wcols])
    for i, c in enumerate(wcols):
        bad = np.flatnonzero(~np.isfinite(H[:, i]))
        if len(bad):
            raise FitError(f"domain {domains[i]!r}: weight missing (NaN/inf in {c!r}) in rows {_rows(bad)}; "
                           "every run needs a weight for every domain (0 if unused)")
    neg = np.flatnonzero((H < 0).any(1))
    if len(neg):
        r = neg[0]
        raise FitError(f"negative mixture weights in rows {_rows(neg)}, e.g. row {r}: "
                       f"{dict(zip(domains, H[r].round(6).tolist()))}")
    sums = H.sum(1)
    off = np.flatnonzero(np.abs(sums - 1) > weight_tol)
    if len(off):
        hint = " (they look like percentages: divide by 100)" if np.allclose(sums, 100, atol=0.1) else ""
        shown = ", ".join(f"row {r}: {sums[r]:.6g}" for r in off[:8])
        raise FitError(f"mixture weights must sum to 1 (±{weight_tol:g}); rows {_rows(off)} do not — {shown}{hint}")
    H = H / sums[:, None]
    N, D = numeric(N_COL), numeric(D_COL)
    for name, v in ((f"{N_COL} (N)", N), (f"{D_COL} (D)", D)):
        bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
        if len(bad):
            raise FitError(f"{name} must be finite and > 0; rows {_rows(bad)} are not (e.g. {v[bad[0]]})")
    losses = {c[: -len(LOSS_SUFFIX)]: numeric(c) for c in lcols}
    bad_by_col = {c + LOSS_SUFFIX: np.flatnonzero(~(np.isfinite(v) & (v > 0))) for c, v in losses.items()}
    bad_by_col = {c: b for c, b in bad_by_col.items() if len(b)}
    keep = np.ones(len(df), dtype=bool)
    if bad_by_col:
        desc = "; ".join(f"{c}: rows {_rows(b)}" for c, b in bad_by_col.items())
        if not drop_invalid:
            raise FitError(f"losses must be finite and > 0 (NaN/inf/<= 0 found) — {desc}; fix them or load with "
                           "drop_invalid=True to drop those rows")
        for b in bad_by_col.values():
            keep[b] = False
        warnings.warn(f"dropped {int((~keep).sum())} of {len(df)} rows with NaN/inf/<= 0 losses — {desc}",
                      FitWarning, stacklevel=3)
        if not keep.any():
            raise FitError("every row has an invalid loss; nothing left to fit")
    extra = {c: df[c].to_numpy() for c in cols if c not in wcols and c not in lcols and c not in (N_COL, D_COL)}
    t = MixtureTable(domains, H, N, D, losses, np.arange(len(df)), extra)
    return t.subset(keep) if not keep.all() else t


def _read_frame(uri: str):
    import pandas as pd

    raw = store.read_bytes(uri)
    name = str(uri).lower()
    if name.endswith((".parquet", ".pq")) or raw[:4] == b"PAR1":
        return pd.read_parquet(io.BytesIO(raw))
    comp = "gzip" if name.endswith(".gz") or raw[:2] == b"\x1f\x8b" else None
    sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
    return pd.read_csv(io.BytesIO(raw), compression=comp, sep=sep)


def load_table(source, *, drop_invalid: bool = False, weight_tol: float = WEIGHT_TOL) -> MixtureTable:
    """Load and validate a loss table from a CSV (.csv, .csv.gz, .tsv) or Parquet file (local path
    or ``s3://`` URI), a pandas DataFrame or a dict of columns."""
    if isinstance(source, MixtureTable):
        return source
    if isinstance(source, (str, Path)):
        try:
            df = _read_frame(str(source))
        except store.NotFound:
            raise FitError(f"loss table {source} does not exist") from None
        except (ValueError, OSError) as e:
            if isinstance(e, FitError):
                raise
            raise FitError(f"cannot read loss table {source} as CSV or Parquet: {e}") from None
        return table_from_frame(df, drop_invalid=drop_invalid, weight_tol=weight_tol)
    return table_from_frame(source, drop_invalid=drop_invalid, weight_tol=weight_tol)


def write_table(table: MixtureTable, uri: str) -> None:
    """Write a table in the public layout: Parquet for ``.parquet``/``.pq``, CSV otherwise."""
    df = table.to_frame()
    buf = io.BytesIO()
    if str(uri).lower().endswith((".parquet", ".pq")):
        df.to_parquet(buf, index=False)
    else:
        buf.write(df.to_csv(index=False).encode())
    store.write_bytes(uri, buf.getvalue())


def split_heldout(table: MixtureTable, by: str = "largest_n", *, n_heldout: int | None = None,
                  frac: float = 0.2, min_n: float | None = None, seed: int = 0,
                  column: str = "heldout") -> tuple[MixtureTable, MixtureTable]:
    """Split into (train, held-out).

    * ``by="largest_n"``: held out = rows with the largest model size (or every N >= ``min_n``):
      fit on small N, validate on larger N (SPEC §2).
    * ``by="mixtures"``: held out = ``n_heldout`` (default ``round(frac·m)``, at least 1) of the m
      distinct mixtures, drawn with ``seed``: unseen mixtures.
    * ``by="column"``: held out = rows where the boolean extra column ``column`` (default
      ``"heldout"``, as the proxy sweep's results table has) is true.
    """
    if by == "largest_n":
        cut = float(np.max(table.N)) if min_n is None else float(min_n)
        held = table.N >= cut
        if held.all() or not held.any():
            sizes = sorted(set(table.N.tolist()))
            raise FitError(f"cannot hold out by model size at N >= {cut:g}: the table's sizes are {sizes}; "
                           "a held-out split needs rows on both sides")
    elif by == "mixtures":
        mixes, inv = table.mixtures()
        m = len(mixes)
        if m < 2:
            raise FitError(f"cannot hold out mixtures: the table has {m} distinct mixture")
        n_h = n_heldout if n_heldout is not None else max(1, int(round(frac * m)))
        if not 1 <= n_h < m:
            raise FitError(f"n_heldout={n_h} must be between 1 and {m - 1} (the table has {m} distinct mixtures)")
        pick = np.random.default_rng(seed).choice(m, size=n_h, replace=False)
        held = np.isin(inv, pick)
    elif by == "column":
        if column not in table.extra:
            raise FitError(f"no column {column!r} to split on; the table's extra columns are {sorted(table.extra)}")
        v = table.extra[column]
        if v.dtype.kind in "OUS":
            v = np.array([str(x).strip().lower() in ("true", "1", "yes") for x in v])
        held = np.asarray(v).astype(bool)
        if held.all() or not held.any():
            raise FitError(f"column {column!r} marks {int(held.sum())} of {len(held)} rows held out; a split needs "
                           "rows on both sides")
    else:
        raise FitError(f"unknown split {by!r}; use 'largest_n', 'mixtures' or 'column'")
    return table.subset(~held), table.subset(held)


# ----------------------------------------------------------------------------- metrics


def mre(pred, obs) -> float:
    """Mean relative error in %: mean(|pred − obs| / obs) · 100."""
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    if pred.shape != obs.shape:
        raise ValueError(f"pred {pred.shape} and obs {obs.shape} differ in shape")
    if pred.size == 0:
        raise ValueError("MRE of no points")
    return float(np.mean(np.abs(pred - obs) / obs) * 100)


def huber(r, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


# ----------------------------------------------------------------------------- the fit


@dataclass
class FitResult:
    law: str
    target: object  # the target spec: a name, "mean" or {name: w}
    domains: list[str]
    params: LawParams  # raw N, D units; .to_dict(domains) for the named form
    train_mre: float  # %
    objective: float  # (1/p) Σ Huber_δ(L − L̂), unscaled
    n_points: int
    n_params: int
    delta: float
    seconds: dict
    convergence: dict
    scales: dict  # {"N0": …, "D0": …}: the internal reference units
    theta: np.ndarray = field(repr=False)  # the optimiser's log-space vector (in N0, D0 units)

    @property
    def target_label(self) -> str:
        return target_label(self.target)

    @property
    def named_params(self) -> dict:
        return self.params.to_dict(self.domains)

    def predict(self, H, N, D) -> np.ndarray:
        return laws.predict(self.params, H, N, D)

    def predict_table(self, table: MixtureTable) -> np.ndarray:
        _same_domains(self, table)
        return self.predict(table.H, table.N, table.D)

    def to_dict(self) -> dict:
        return {"law": self.law, "target": self.target, "domains": list(self.domains), "params": self.named_params,
                "train_mre": self.train_mre, "objective": self.objective, "n_points": self.n_points,
                "n_params": self.n_params, "delta": self.delta, "seconds": self.seconds,
                "convergence": self.convergence, "scales": self.scales}

    def save(self, uri: str) -> None:
        store.write_json(uri, _jsonable(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict) -> "FitResult":
        params = laws.params_from_dict(d["params"], d["domains"])
        s = d.get("scales", {"N0": 1.0, "D0": 1.0})
        return cls(d["law"], d["target"], list(d["domains"]), params, d["train_mre"], d["objective"], d["n_points"],
                   d["n_params"], d["delta"], d.get("seconds", {}), d.get("convergence", {}), s,
                   laws.to_theta(params, s["N0"], s["D0"]))

    @classmethod
    def load(cls, uri: str) -> "FitResult":
        return cls.from_dict(store.read_json(uri))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def _same_domains(fit: FitResult, table: MixtureTable) -> None:
    if list(table.domains) != list(fit.domains):
        raise FitError(f"the table's domains {table.domains} differ from the fit's {fit.domains}")


class _Objective:
    """(1/p) Σ Huber_δ(y − L̂(θ)) / δ² and its gradient, for one law and design."""

    def __init__(self, law: str, X: Design, y: np.ndarray, delta: float):
        self.law, self.X, self.y, self.delta = law, X, y, delta
        self.scale = 1.0 / (len(y) * delta * delta)
        self.nfev = 0

    def __call__(self, theta):
        self.nfev += 1
        pred, J = laws.theta_predict_jac(theta, self.law, self.X)
        r = self.y - pred
        if not np.all(np.isfinite(r)) or not np.all(np.isfinite(J)):
            return 1e30, np.zeros_like(theta)
        f = huber(r, self.delta).sum() * self.scale
        g = -(np.clip(r, -self.delta, self.delta) @ J) * self.scale
        return float(f), g

    def value(self, theta) -> float:
        return float(self(theta)[0])

    def mean(self, f: float) -> float:
        """The scaled objective back in the spec's units: (1/p) Σ Huber_δ."""
        return f * self.delta * self.delta

    def batch(self, thetas: np.ndarray, chunk: int = 256) -> np.ndarray:
        out = np.empty(len(thetas))
        for s in range(0, len(thetas), chunk):
            pred = laws.theta_predict(thetas[s:s + chunk], self.law, self.X)
            with np.errstate(invalid="ignore", over="ignore"):
                f = huber(self.y[None] - pred, self.delta).sum(1) * self.scale
            out[s:s + chunk] = np.where(np.isfinite(f), f, np.inf)
        return out


def _bounds(law: str, k: int, y: np.ndarray) -> list[tuple[float, float]]:
    """Box bounds on theta: wide enough never to bind on a sensible fit, tight enough that no
    exp() overflows."""
    lg = (np.log(1e-3), np.log(20.0))  # γ_i
    lexp = (np.log(1e-3), np.log(1.5))  # α, β
    lE = (-20.0, float(np.log(2 * np.max(y))))
    big = (-30.0, 30.0)
    if law == "additive":
        return [lE, *[big] * k, *[lg] * k, big, lexp, big, lexp]
    # s_i = γ_A·log C^A'_i in ±20, γ_A, γ_B ≥ 0.1, α, β ≤ 1.5: the raw-unit
    # log C^A_i = (s_i + α·log N0)/γ_A stays below float64's 709 for N0, D0 up to ~1e13
    lgj = (np.log(0.1), np.log(10.0))
    s = (-20.0, 20.0)
    return [lE, *[big] * k, *[lg] * k, *[s] * k, lgj, lexp, *[s] * k, lgj, lexp]


def _random_thetas(law: str, k: int, y: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Log-uniform draws over broad, data-scaled ranges (N, D in units of their geometric means)."""
    lmin = float(np.min(y))
    u = lambda lo, hi, size=None: rng.uniform(lo, hi, size=(m,) if size is None else (m, size))  # noqa: E731
    lE = np.log(lmin) + u(np.log(0.05), np.log(0.98))
    lC = u(np.log(0.3), np.log(300.0), k) - np.log(lmin)
    lg = u(np.log(0.05), np.log(2.0), k)
    lA, lal = np.log(lmin) + u(np.log(1e-3), np.log(1.0)), u(np.log(0.05), np.log(1.5))
    lB, lbe = np.log(lmin) + u(np.log(1e-3), np.log(1.0)), u(np.log(0.05), np.log(1.5))
    if law == "additive":
        return np.column_stack([lE, lC, lg, lA, lal, lB, lbe])
    lgA, lgB = u(np.log(0.3), np.log(3.0)), u(np.log(0.3), np.log(3.0))
    sA = lA[:, None] + np.exp(lgA)[:, None] * u(-1.0, 1.0, k)  # s_i = γ_A·log C^A'_i
    sB = lB[:, None] + np.exp(lgB)[:, None] * u(-1.0, 1.0, k)
    return np.column_stack([lE, lC, lg, sA, lgA, lal, sB, lgB, lbe])


def _check_points(table: MixtureTable, law: str) -> None:
    k, p = table.k, n_params(law, table.k)
    pts = table.n_distinct_points()
    if pts < p:
        other = " or use law='additive' (" + str(n_params("additive", k)) + " parameters)" if law == "joint" else ""
        raise FitError(f"{pts} distinct (mixture, N, D) points for the {law} law's {p} parameters (k={k} domains: "
                       f"{'5+2k' if law == 'additive' else '5+4k'}): underdetermined — add runs or "
                       f"checkpoints{other}")
    m = len(table.mixtures()[0])
    if m < 2 * k + 1:
        warnings.warn(f"{m} distinct mixtures for {k} domains: the mixture term's 2k+1={2 * k + 1} parameters "
                      f"(E, C_i, γ_i) are underdetermined whatever the number of checkpoints; SPEC §2 suggests ≈10 "
                      f"mixtures for 3–4 domains, ≈20 for 6–8", FitWarning, stacklevel=3)


def _one_blas_thread():
    """The fit's linear algebra is tiny: a multi-threaded BLAS only spins (5–10× slower on a
    busy machine), so L-BFGS-B runs with one BLAS thread where threadpoolctl is available.
    scipy is imported first: its own OpenBLAS must be loaded for the limit to cover it."""
    import scipy.optimize  # noqa: F401

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1)


def fit_law(table: MixtureTable, law: str = "additive", target="mean", *, delta: float = 1e-3,
            n_starts: int = 3, n_random: int = 2000, n_screen: int = 24, screen_iter: int = 150, seed: int = 0,
            niter: int = 10, niter_success: int | None = 5, init=None, warm_start: "FitResult | None" = None,
            stepsize: float = 0.5, temperature: float = 1.0, maxiter: int = 1500,
            polish_nfev: int = 2000) -> FitResult:
    """Fit ``law`` ("additive" | "joint") to ``target`` on ``table``.

    1. random search: ``n_random`` log-uniform draws, evaluated in one vectorised pass;
    2. screening: the best ``n_screen`` draws get a short L-BFGS-B run (``screen_iter``
       iterations) — the value after a short descent predicts the basin far better than the
       value at a random point;
    3. the best ``n_starts`` screened points (plus ``init`` and, for the joint law, the warm
       start) each start ``scipy.optimize.basinhopping`` (``niter`` hops, stopping after
       ``niter_success`` hops without improvement; L-BFGS-B inner minimiser with the analytic
       gradient, ``maxiter`` iterations per local minimisation, steps of ``stepsize`` in log
       space at temperature ``temperature`` on the δ²-scaled objective);
    4. the best result is polished: a longer L-BFGS-B run, then a trust-region Gauss-Newton run
       on the same Huber objective (``scipy.optimize.least_squares``, ``loss="huber"``,
       ``f_scale=delta``, at most ``polish_nfev`` evaluations; 0 skips it), which follows the
       narrow valleys of the joint law's parameters far better than L-BFGS-B; the lowest wins.

    ``init``: a :class:`FitResult`, law parameters or their dict. ``warm_start`` (joint law
    only): an additive :class:`FitResult` on the same target; fitted here with the same
    settings when None. The joint fit keeps the warm start if nothing beats it. ``seed`` makes
    the fit deterministic.
    """
    with _one_blas_thread():
        return _fit_law(table, law, target, delta=delta, n_starts=n_starts, n_random=n_random, n_screen=n_screen,
                        screen_iter=screen_iter, seed=seed, niter=niter, niter_success=niter_success, init=init,
                        warm_start=warm_start, stepsize=stepsize, temperature=temperature, maxiter=maxiter,
                        polish_nfev=polish_nfev)


def _fit_law(table, law, target, *, delta, n_starts, n_random, n_screen, screen_iter, seed, niter, niter_success,
             init, warm_start, stepsize, temperature, maxiter, polish_nfev) -> FitResult:
    from scipy.optimize import basinhopping, least_squares, minimize

    if law not in LAWS:
        raise FitError(f"unknown law {law!r}; known: {', '.join(LAWS)}")
    if delta <= 0:
        raise FitError(f"delta must be > 0, got {delta}")
    t_start = time.perf_counter()
    y = table.target_values(target)
    _check_points(table, law)
    k = table.k
    N0, D0 = float(np.exp(np.mean(np.log(table.N)))), float(np.exp(np.mean(np.log(table.D))))
    X = Design(table.H, np.log(table.N / N0), np.log(table.D / D0))
    obj = _Objective(law, X, y, delta)
    bounds = _bounds(law, k, y)
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    rng = np.random.default_rng(seed)
    seconds: dict[str, float] = {}

    starts: list[tuple[str, np.ndarray]] = []
    warm = None
    if law == "joint":
        t0 = time.perf_counter()
        if warm_start is None:
            warm_start = _fit_law(table, "additive", target, delta=delta, n_starts=n_starts, n_random=n_random,
                                  n_screen=n_screen, screen_iter=screen_iter, seed=seed, niter=niter,
                                  niter_success=niter_success, init=None, warm_start=None, stepsize=stepsize,
                                  temperature=temperature, maxiter=maxiter, polish_nfev=polish_nfev)
        elif warm_start.law != "additive":
            raise FitError(f"warm_start must be an additive fit, got a {warm_start.law} fit")
        else:
            _same_domains(warm_start, table)
        warm = laws.additive_theta_to_joint(laws.to_theta(warm_start.params, N0, D0), k)
        starts.append(("warm_start", warm))
        seconds["warm_start"] = time.perf_counter() - t0
    if init is not None:
        p = init.params if isinstance(init, FitResult) else init
        p = laws.params_from_dict(p, table.domains) if isinstance(p, dict) else p
        if p.law != law:
            if p.law == "additive" and law == "joint":
                p = laws.additive_to_joint(p)
            else:
                raise FitError(f"init is a {p.law} law; cannot start a {law} fit from it")
        starts.append(("init", np.clip(laws.to_theta(p, N0, D0), lo, hi)))

    mkw = {"method": "L-BFGS-B", "jac": True, "bounds": bounds,
           "options": {"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 20}}
    t0 = time.perf_counter()
    n_rand_starts = max(0, n_starts - (1 if warm is not None else 0))
    if n_random > 0 and n_rand_starts > 0:
        cand = np.clip(_random_thetas(law, k, y, n_random, rng), lo, hi)
        fv = obj.batch(cand)
        seconds["random_search"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        screened = []
        for j in np.argsort(fv)[:max(n_screen, n_rand_starts)]:
            if screen_iter > 0:
                r = minimize(obj, cand[j], **{**mkw, "options": {**mkw["options"], "maxiter": screen_iter}})
                screened.append((float(r.fun), int(j), np.asarray(r.x, dtype=np.float64)))
            else:
                screened.append((float(fv[j]), int(j), cand[j]))
        screened.sort(key=lambda s: s[0])
        for _, j, x in screened[:n_rand_starts]:
            starts.append((f"random#{j}", x))
        seconds["screen"] = time.perf_counter() - t0
    if not starts:
        raise FitError("no starting point: give n_random > 0 and n_starts > 0, or init")

    t0 = time.perf_counter()
    runs = []
    best_theta, best_f = None, np.inf
    for name, x0 in starts:
        f0 = obj.value(x0)
        res = basinhopping(obj, x0, niter=niter, T=temperature, stepsize=stepsize, minimizer_kwargs=mkw,
                           niter_success=niter_success, seed=int(rng.integers(2**31)))
        lres = res.lowest_optimization_result
        runs.append({"start": name, "f0": obj.mean(f0), "f": obj.mean(float(res.fun)),
                     "nfev": int(res.nfev), "nit": int(res.nit), "success": bool(lres.success),
                     "message": str(lres.message)})
        if res.fun < best_f:
            best_theta, best_f = np.asarray(res.x, dtype=np.float64), float(res.fun)
    seconds["basinhopping"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pol = minimize(obj, best_theta, **{**mkw, "options": {**mkw["options"], "maxiter": 3 * maxiter}})
    if pol.fun <= best_f:
        best_theta, best_f = np.asarray(pol.x, dtype=np.float64), float(pol.fun)
    polish = {"lbfgsb": {"success": bool(pol.success), "message": str(pol.message), "nit": int(pol.nit)}}
    if polish_nfev > 0:
        gn = least_squares(lambda th: laws.theta_predict(th, law, X) - y,
                           np.clip(best_theta, lo + 1e-10, hi - 1e-10),
                           jac=lambda th: laws.theta_predict_jac(th, law, X)[1], bounds=(lo, hi), loss="huber",
                           f_scale=delta, method="trf", x_scale="jac", max_nfev=polish_nfev, ftol=1e-12,
                           xtol=1e-12, gtol=1e-12)
        fg = obj.value(gn.x)
        polish["gauss_newton"] = {"status": int(gn.status), "message": str(gn.message), "nfev": int(gn.nfev),
                                  "improved": bool(fg < best_f)}
        if fg < best_f:
            best_theta, best_f = np.asarray(gn.x, dtype=np.float64), fg
    seconds["polish"] = time.perf_counter() - t0
    kept_warm = False
    if warm is not None:
        fw = obj.value(warm)
        if fw <= best_f:
            best_theta, best_f, kept_warm = warm, fw, True
    seconds["total"] = time.perf_counter() - t_start

    params = laws.from_theta(best_theta, law, k, N0, D0)
    pred = laws.theta_predict(best_theta, law, X)
    conv = {"runs": runs, "polish": polish,
            "nfev": obj.nfev, "kept_warm_start": kept_warm,
            "at_bound": [nm for nm, v, a, b in zip(laws.param_names(law, table.domains), best_theta, lo, hi)
                         if min(v - a, b - v) < 1e-6]}
    if warm_start is not None:
        conv["additive_objective"] = warm_start.objective
    return FitResult(law, target, list(table.domains), params, mre(pred, y), obj.mean(best_f), len(y),
                     n_params(law, k), delta, seconds, conv, {"N0": N0, "D0": D0}, best_theta)


def objective(params: LawParams, table: MixtureTable, target="mean", delta: float = 1e-3) -> float:
    """The fit's objective (1/p) Σ Huber_δ(L − L̂) of any law parameters on ``table`` — e.g. of
    the true parameters, which a converged fit must match or beat."""
    r = table.target_values(target) - laws.predict(params, table.H, table.N, table.D)
    return float(np.mean(huber(r, delta)))


def evaluate(fit: FitResult, table: MixtureTable) -> float:
    """MRE (%) of ``fit`` on ``table``'s rows for the fit's own target (e.g. held-out rows)."""
    _same_domains(fit, table)
    return mre(fit.predict(table.H, table.N, table.D), table.target_values(fit.target))


# ----------------------------------------------------------------------------- reports


def compare_laws(train: MixtureTable, heldout: MixtureTable | None, targets, **fit_kw) -> list[dict]:
    """Fit both laws to every target (the joint law warm-started from the additive fit); one row
    per target: ``{"target", "additive", "joint"}`` (FitResults) and the train/held-out MREs."""
    rows = []
    for t in targets:
        add = fit_law(train, "additive", t, **fit_kw)
        joint = fit_law(train, "joint", t, warm_start=add, **fit_kw)
        row = {"target": target_label(t), "additive": add, "joint": joint,
               "additive_train": add.train_mre, "joint_train": joint.train_mre}
        if heldout is not None and len(heldout):
            row["additive_heldout"], row["joint_heldout"] = evaluate(add, heldout), evaluate(joint, heldout)
        rows.append(row)
    return rows


def mre_table_markdown(rows: list[dict], digits: int = 2) -> str:
    """A Markdown table in the form of the paper's Table 2: rows = targets (+ average), columns =
    additive/joint × train/held-out MRE (%). ``rows`` as returned by :func:`compare_laws`."""
    cols = [("additive_train", "Additive train"), ("additive_heldout", "Additive held-out"),
            ("joint_train", "Joint train"), ("joint_heldout", "Joint held-out")]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    out = ["| Target | " + " | ".join(f"{h} MRE %" for _, h in cols) + " |",
           "|---|" + "---:|" * len(cols)]
    fmt = lambda v: "–" if v is None else f"{v:.{digits}f}"  # noqa: E731
    for r in rows:
        out.append(f"| {r['target']} | " + " | ".join(fmt(r.get(c)) for c, _ in cols) + " |")
    avg = [np.mean([r[c] for r in rows if c in r]) for c, _ in cols]
    out.append("| **Average** | " + " | ".join(f"**{fmt(v)}**" for v in avg) + " |")
    return "\n".join(out) + "\n"


def plot_fit(fits, train: MixtureTable, heldout: MixtureTable | None = None, title: str | None = None,
             dpi: int = 110) -> bytes:
    """Predicted vs observed loss, one panel per fit (e.g. [additive, joint]): train rows as
    dots, held-out rows as crosses, colour = log N, the y = x line and the MREs. PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fits = [fits] if isinstance(fits, FitResult) else list(fits)
    if not fits:
        raise ValueError("nothing to plot")
    allN = np.concatenate([train.N] + ([heldout.N] if heldout is not None and len(heldout) else []))
    norm = LogNorm(vmin=allN.min(), vmax=max(allN.max(), allN.min() * 1.0001))
    fig, axes = plt.subplots(1, len(fits), figsize=(4.6 * len(fits), 4.4), squeeze=False)
    sc = None
    for ax, f in zip(axes[0], fits):
        obs, pred = train.target_values(f.target), f.predict_table(train)
        sc = ax.scatter(obs, pred, c=train.N, norm=norm, cmap="viridis", s=14, marker="o",
                        label=f"train (MRE {mre(pred, obs):.2f}%)")
        lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
        if heldout is not None and len(heldout):
            ho, hp = heldout.target_values(f.target), f.predict_table(heldout)
            ax.scatter(ho, hp, c=heldout.N, norm=norm, cmap="viridis", s=36, marker="x",
                       label=f"held-out (MRE {mre(hp, ho):.2f}%)")
            lo, hi = min(lo, ho.min(), hp.min()), max(hi, ho.max(), hp.max())
        pad = 0.02 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=1, ls="--")
        ax.set_xlabel("observed loss")
        ax.set_ylabel("predicted loss")
        ax.set_title(f"{f.law} law — {f.target_label}")
        ax.legend(loc="upper left", fontsize=8)
    if sc is not None:
        fig.colorbar(sc, ax=axes[0].tolist(), label="model size N")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def fits_json(rows: list[dict]) -> str:
    """The fits of :func:`compare_laws` as one JSON document (for the object store)."""
    doc = [{"target": r["target"], **{k: (v.to_dict() if isinstance(v, FitResult) else v) for k, v in r.items()
                                      if k != "target"}} for r in rows]
    return json.dumps(_jsonable(doc), indent=2)
