"""The optimal mixture for a budget, and the training schedule that uses it (SPEC §2, §3).

:func:`optimal_mixture` minimises a fitted law's predicted loss over the simplex at a given
(N, D) under

* per-domain bounds ``lo_i ≤ h_i ≤ hi_i`` (``bounds``; domains left out of ``domains`` get 0),
* the data actually available: with ``available_tokens[i]`` unique tokens and at most
  ``max_repeats`` passes over them, h_i·D ≤ max_repeats·available_i (a domain missing from
  ``available_tokens`` is unlimited).

Infeasible constraints (a lower bound above a cap, Σ lo > 1, Σ caps < 1) raise
:class:`~seedbed.mixture.fit.FitError` naming the domains and the numbers.

Method: mirror descent on the simplex (``method="mirror"``) — h ← h ⊙ exp(−η∇L),
followed by the KL (Bregman) projection onto {Σh = 1, lo ≤ h ≤ hi}, which is
h_i = clip(λ·x_i, lo_i, hi_i) with λ solved exactly on its piecewise-linear segment; η adapts
(Armijo backtracking, grown after each accepted step). Multiplicative updates keep free
weights > 0, where the gradient of h^γ (γ < 1) is finite. ``method="slsqp"`` uses scipy's
SLSQP with the bounds (lower bounds raised to 1e-9 for the same reason) and Σh = 1.
``method="auto"`` (default) runs 300 mirror steps and then SLSQP from there, keeping the
better: mirror descent is robust far from the optimum but converges slowly (linearly) near it,
SLSQP the other way round. All run from the uniform, the natural (when known) and a few random
Dirichlet starts and keep the best: the joint law need not be convex in h. For the additive
law h* does not depend on N and D.

A law is only trustworthy where the runs sampled it: pass ``bounds={d: (min_weight, 1)}`` (the
sweep's minimum weight) to keep h* inside that region. On the 8-domain benchmark that cut the
true-loss regret of the fitted h* from up to 1.1% to ≤ 0.13% (``benchmarks/README.md``).

:func:`schedule` turns h* into the ``{"mixture": …, "upsample": {"weights": …, "fraction": f}}``
fields of :class:`seedbed.train.config.TrainConfig`; the upsampling window (SPEC §3, default the
last 15% of tokens) is either explicit weights, a second optimum (e.g. h* of a law fitted to a
targeted, benchmark-like loss), or ``upweight={domain: factor}``: window weights ∝ h*_i·factor_i,
capped by what is left of each domain's data after the base phase and renormalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seedbed.mixture import laws
from seedbed.mixture.fit import FitError, FitResult
from seedbed.train.schedule import DEFAULT_UPSAMPLE_FRACTION, check_weights

METHODS = ("auto", "mirror", "slsqp")


@dataclass
class MixtureOptimum:
    """h* and its predicted loss, with the uniform and natural mixtures for comparison."""

    weights: dict[str, float]  # every fitted domain, 0 where excluded
    loss: float
    N: float
    D: float
    law: str
    target: str
    uniform: dict  # {"weights", "loss", "feasible"}
    natural: dict | None  # ∝ available tokens (None without available_tokens for every domain)
    bounds: dict[str, tuple[float, float]]  # effective (lo, hi), caps included
    at_bounds: list[str]
    method: str
    converged: bool
    iterations: int
    starts: list = field(default_factory=list, repr=False)

    @property
    def h(self) -> np.ndarray:
        return np.array(list(self.weights.values()))

    def to_dict(self) -> dict:
        return {"weights": dict(self.weights), "loss": self.loss, "N": self.N, "D": self.D, "law": self.law,
                "target": self.target, "uniform": self.uniform, "natural": self.natural,
                "bounds": {d: list(b) for d, b in self.bounds.items()}, "at_bounds": list(self.at_bounds),
                "method": self.method, "converged": self.converged, "iterations": self.iterations}


# ----------------------------------------------------------------------------- constraints


def _constraints(fit: FitResult, D: float, domains, bounds, available_tokens, max_repeats):
    all_d = list(fit.domains)
    domains = all_d if domains is None else [str(d) for d in domains]
    unknown = sorted(set(domains) - set(all_d))
    if unknown:
        raise FitError(f"unknown domain(s) {unknown}; the law was fitted on {all_d}")
    if not domains:
        raise FitError("no domains to mix")
    inc = np.array([d in domains for d in all_d])
    lo = np.zeros(len(all_d))
    hi = np.where(inc, 1.0, 0.0)
    why = {d: "" for d in all_d}
    for d, b in (bounds or {}).items():
        if d not in all_d:
            raise FitError(f"bounds for unknown domain {d!r}; the law was fitted on {all_d}")
        try:
            a, c = (float(x) for x in b)
        except (TypeError, ValueError):
            raise FitError(f"bounds[{d!r}] must be a pair (lo, hi), got {b!r}") from None
        if not (0 <= a <= c <= 1):
            raise FitError(f"bounds[{d!r}] = ({a}, {c}) must satisfy 0 <= lo <= hi <= 1")
        i = all_d.index(d)
        if not inc[i]:
            if a > 0:
                raise FitError(f"domain {d!r} is excluded (not in domains={domains}) but has lower bound {a}")
            continue
        lo[i], hi[i] = a, c
        why[d] = f"upper bound {c:g}"
    if max_repeats is not None and max_repeats <= 0:
        raise FitError(f"max_repeats must be > 0, got {max_repeats}")
    for d, n in (available_tokens or {}).items() if max_repeats is not None else ():
        if d not in all_d:
            raise FitError(f"available_tokens for unknown domain {d!r}; the law was fitted on {all_d}")
        n = float(n)
        if not np.isfinite(n) or n < 0:
            raise FitError(f"available_tokens[{d!r}] = {n} must be a finite count >= 0")
        i = all_d.index(d)
        cap = max_repeats * n / D
        if inc[i] and cap < hi[i]:
            hi[i] = cap
            why[d] = f"cap {cap:.4g} = max_repeats {max_repeats:g} × {n:.4g} available tokens / D {D:.4g}"
    bad = [i for i in range(len(all_d)) if lo[i] > hi[i] + 1e-15]
    if bad:
        raise FitError("infeasible bounds: " + "; ".join(
            f"{all_d[i]!r} needs at least {lo[i]:g} but is limited to {hi[i]:.4g} ({why[all_d[i]] or 'excluded'})"
            for i in bad) + " — lower the bounds, raise max_repeats, add data or lower D")
    if lo.sum() > 1 + 1e-12:
        raise FitError(f"infeasible bounds: the lower bounds sum to {lo.sum():.6g} > 1 "
                       f"({ {all_d[i]: float(lo[i]) for i in np.flatnonzero(lo)} })")
    if hi.sum() < 1 - 1e-12:
        limits = ", ".join(f"{all_d[i]} ≤ {hi[i]:.4g}" + (f" ({why[all_d[i]]})" if why[all_d[i]] else "")
                           for i in np.flatnonzero(inc))
        raise FitError(f"infeasible: the domains can supply at most {hi.sum():.4g} of the mixture (< 1) at "
                       f"D={D:.4g} tokens — {limits}; raise max_repeats or the upper bounds, add data, lower D "
                       "or include more domains")
    return all_d, domains, inc, lo, np.minimum(hi, 1.0)


def _kl_project(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, free: np.ndarray) -> np.ndarray:
    """argmin KL(h‖x) over {Σh = 1, lo ≤ h ≤ hi}: h_i = clip(λ x_i, lo_i, hi_i) on the free
    coordinates (the others stay at lo). Σ clip(λx) is piecewise linear in λ with breakpoints
    lo_i/x_i and hi_i/x_i: find the segment that crosses the target and solve it exactly."""
    h = np.where(free, 0.0, lo)
    target = 1.0 - h.sum()
    xf, lf, hf = x[free], lo[free], hi[free]
    bp = np.unique(np.concatenate([lf / xf, hf / xf]))
    sums = np.clip(bp[:, None] * xf[None, :], lf, hf).sum(1)  # non-decreasing in λ
    j = int(np.searchsorted(sums, target))  # first breakpoint with sum >= target
    if j >= len(bp):
        lam = bp[-1]
    else:
        lam_hi = bp[j]
        lam_lo = bp[j - 1] if j > 0 else 0.0
        mid = 0.5 * (lam_lo + lam_hi)
        inner = (mid * xf > lf) & (mid * xf < hf)  # coordinates on their linear piece in this segment
        fixed = np.clip(mid * xf, lf, hf)
        slope = xf[inner].sum()
        lam = lam_hi if slope <= 0 else (target - fixed[~inner].sum()) / slope
        lam = min(max(lam, lam_lo), lam_hi)
    hv = np.clip(lam * xf, lf, hf)
    inner = (hv > lf) & (hv < hf)
    if inner.any():  # float rounding only
        hv[inner] += (target - hv.sum()) * hv[inner] / hv[inner].sum()
    h[free] = hv
    return h


def _mirror_descent(fg, h0, lo, hi, free, max_iter, tol):
    h = _kl_project(np.maximum(h0, 1e-12), lo, hi, free)
    L, g = fg(h)
    eta = 1.0 / max(1e-12, float(np.max(np.abs(g[free] - g[free] @ h[free]))))
    it, converged = 0, False
    for it in range(1, max_iter + 1):
        gc = g[free] - g[free] @ h[free]
        x = h.copy()
        x[free] = np.maximum(h[free] * np.exp(np.clip(-eta * gc, -30.0, 30.0)), 1e-300)
        hn = _kl_project(x, lo, hi, free)
        Ln, gn = fg(hn)
        if np.isfinite(Ln) and Ln <= L + 1e-4 * float(g @ (hn - h)):
            small = abs(L - Ln) <= tol * abs(L) and np.max(np.abs(hn - h)) <= 1e-9
            h, L, g = hn, Ln, gn
            eta *= 1.5
            if small:
                converged = True
                break
        else:
            eta *= 0.5
            if eta * float(np.max(np.abs(gc))) < 1e-14:  # no step changes h any more: a stationary point
                converged = True
                break
    return h, L, it, converged


def _slsqp(fg, h0, lo, hi, free, max_iter, tol):
    from scipy.optimize import minimize

    idx = np.flatnonzero(free)
    base = np.where(free, 0.0, lo)
    lof = np.maximum(lo[idx], np.minimum(1e-9, hi[idx]))

    def full(z):
        h = base.copy()
        h[idx] = z
        return h

    def f(z):
        L, g = fg(full(z))
        return L, g[idx]

    z0 = np.clip(_kl_project(np.maximum(h0, 1e-12), lo, hi, free)[idx], lof, hi[idx])
    res = minimize(f, z0, jac=True, method="SLSQP", bounds=list(zip(lof, hi[idx])),
                   constraints=[{"type": "eq", "fun": lambda z: z.sum() - (1 - base.sum()),
                                 "jac": lambda z: np.ones_like(z)}],
                   options={"maxiter": max_iter, "ftol": tol})
    h = full(np.clip(res.x, lof, hi[idx]))
    h = _kl_project(np.maximum(h, 1e-300), lo, hi, free)  # Σh = 1 exactly, not to SLSQP's tolerance
    return h, fg(h)[0], int(res.nit), bool(res.success)


def _auto(fg, h0, lo, hi, free, max_iter, tol):
    """A few hundred mirror-descent steps (robust far from the optimum), then SLSQP from there
    (fast local convergence); the better of the two."""
    h1, L1, it1, c1 = _mirror_descent(fg, h0, lo, hi, free, min(max_iter, 300), tol)
    h2, L2, it2, c2 = _slsqp(fg, h1, lo, hi, free, max_iter, tol)
    if np.isfinite(L2) and L2 <= L1:
        return h2, L2, it1 + it2, c2 or c1
    return h1, L1, it1 + it2, c1


def _loss_fn(params, N, D):
    def fg(h):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            L, g = laws.predict_grad_h(params, h, N, D)
        if not np.isfinite(L):
            return np.inf, np.zeros_like(h)
        return L, np.nan_to_num(g, nan=0.0, posinf=1e300, neginf=-1e300)
    return fg


def optimal_mixture(fit: FitResult, N: float, D: float, domains=None, bounds: dict | None = None,
                    available_tokens: dict | None = None, max_repeats: float = 1.0, method: str = "auto",
                    n_starts: int = 6, seed: int = 0, max_iter: int = 20000, tol: float = 1e-13) -> MixtureOptimum:
    """h* minimising ``fit``'s predicted loss at model size ``N`` and ``D`` training tokens.

    ``domains``: the domains that may get weight (default: all the fit's domains; the others get
    0). ``bounds``: ``{domain: (lo, hi)}``. ``available_tokens``: ``{domain: unique tokens}``,
    capping h_i·D ≤ ``max_repeats``·available_i (``max_repeats=None``: no cap). Returns a
    :class:`MixtureOptimum` with the predicted loss of h*, of the uniform mixture over
    ``domains`` and of the natural mixture (∝ available tokens, when every included domain has
    a count).
    """
    if method not in METHODS:
        raise FitError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    N, D = float(N), float(D)
    if not (N > 0 and D > 0 and np.isfinite(N) and np.isfinite(D)):
        raise FitError(f"N and D must be finite and > 0, got N={N}, D={D}")
    all_d, domains, inc, lo, hi = _constraints(fit, D, domains, bounds, available_tokens, max_repeats)
    fg = _loss_fn(fit.params, N, D)
    free = inc & (hi > lo)
    k = len(all_d)

    def feasible(h):
        return bool(np.all(h >= lo - 1e-9) and np.all(h <= hi + 1e-9))

    uni = np.where(inc, 1.0 / inc.sum(), 0.0)
    starts = [("uniform", uni)]
    natural = None
    avail = available_tokens or {}
    if all(d in avail for d in domains) and sum(float(avail[d]) for d in domains) > 0:
        nat = np.array([float(avail[d]) if (d in domains) else 0.0 for d in all_d])
        nat = nat / nat.sum()
        natural = {"weights": dict(zip(all_d, nat.tolist())), "loss": _safe_loss(fit, nat, N, D),
                   "feasible": feasible(nat)}
        starts.append(("natural", nat))
    rng = np.random.default_rng(seed)
    for j in range(max(0, n_starts - len(starts))):
        r = np.zeros(k)
        r[inc] = rng.dirichlet(np.ones(inc.sum()))
        starts.append((f"random#{j}", r))

    best = None
    runs = []
    if not free.any():  # every weight pinned by its bounds
        h = np.where(inc, lo, 0.0)
        best = (h, fg(h)[0], 0, True, "pinned")
    else:
        solver = {"mirror": _mirror_descent, "slsqp": _slsqp, "auto": _auto}[method]
        for name, h0 in starts:
            h, L, it, conv = solver(fg, np.where(inc, h0, 0.0), lo, hi, free, max_iter, tol)
            runs.append({"start": name, "loss": L, "iterations": it, "converged": conv})
            if best is None or L < best[1]:
                best = (h, L, it, conv, name)
    h, L, it, conv, _ = best
    h = np.where(np.abs(h) < 1e-15, 0.0, h)
    at = [d for i, d in enumerate(all_d) if inc[i] and (abs(h[i] - lo[i]) < 1e-7 or abs(h[i] - hi[i]) < 1e-7)]
    return MixtureOptimum(
        weights=dict(zip(all_d, h.tolist())), loss=float(laws.predict(fit.params, h, N, D)[0]), N=N, D=D,
        law=fit.law, target=fit.target_label,
        uniform={"weights": dict(zip(all_d, uni.tolist())), "loss": _safe_loss(fit, uni, N, D),
                 "feasible": feasible(uni)},
        natural=natural, bounds={d: (float(lo[i]), float(hi[i])) for i, d in enumerate(all_d)}, at_bounds=at,
        method=method, converged=conv, iterations=it, starts=runs)


def _safe_loss(fit, h, N, D) -> float:
    with np.errstate(divide="ignore"):
        return float(laws.predict(fit.params, h, N, D)[0])


# ----------------------------------------------------------------------------- the schedule


def _as_weights(w, what: str) -> dict[str, float]:
    if isinstance(w, MixtureOptimum):
        w = w.weights
    if not isinstance(w, dict) or not w:
        raise FitError(f"{what}: expected a mapping domain → weight or a MixtureOptimum, got {type(w).__name__}")
    out = {}
    for d, v in w.items():
        v = float(v)
        if not np.isfinite(v) or v < 0:
            raise FitError(f"{what}: weight of {d!r} is {v}; weights must be finite and >= 0")
        out[str(d)] = v
    if sum(out.values()) <= 0:
        raise FitError(f"{what}: all weights are 0")
    return out


def round_weights(w: dict, decimals: int = 6, what: str = "mixture") -> dict[str, float]:
    """Renormalise, round to ``decimals`` and put the rounding residue on the largest weight, so
    the weights sum to 1 well within ``check_weights``' 1e-6; zero weights are dropped."""
    w = _as_weights(w, what)
    total = sum(w.values())
    r = {d: round(v / total, decimals) for d, v in w.items()}
    top = max(r, key=r.get)
    r[top] = 1.0 - sum(v for d, v in r.items() if d != top)
    r = {d: v for d, v in r.items() if v > 0}
    return check_weights(r, None, what)


def _water_fill(u: np.ndarray, cap: np.ndarray, names: list[str], pref: np.ndarray) -> np.ndarray:
    """Scale ``u`` (Σ = 1) under per-domain caps: clip, hand the excess to the uncapped domains
    in proportion to their weight (to those with none in proportion to ``pref``), repeat."""
    if cap.sum() < 1 - 1e-12:
        raise FitError("the upsampling window cannot be filled: the data left after the base phase supplies at "
                       f"most {cap.sum():.4g} of it — caps {dict(zip(names, np.round(cap, 6).tolist()))}; "
                       "shorten the window, raise max_repeats or add data")
    u = u.copy()
    fixed = np.zeros(len(u), dtype=bool)
    for _ in range(2 * len(u) + 2):
        over = (u > cap) & ~fixed
        if not over.any():
            break
        fixed |= over
        u[fixed] = cap[fixed]
        rest = 1.0 - u[fixed].sum()
        free_mass = u[~fixed].sum()
        if free_mass <= 0:  # only domains the window gave no weight are left: fill them like the base
            p = np.where(fixed, 0.0, pref if pref[~fixed].sum() > 0 else 1.0)
            u[~fixed] = rest * p[~fixed] / p[~fixed].sum()
        else:
            u[~fixed] *= rest / free_mass
    return u


def schedule(h_star, upsample=None, *, upweight: dict | None = None, fraction: float = DEFAULT_UPSAMPLE_FRACTION,
             available_tokens: dict | None = None, total_tokens: float | None = None, max_repeats: float = 1.0,
             decimals: int = 6) -> dict:
    """The TrainConfig fields ``{"mixture": …, "upsample": {"weights": …, "fraction": f}}``.

    ``h_star``: the base mixture (a :class:`MixtureOptimum` or ``{domain: w}``). The window
    (the last ``fraction`` of the tokens, SPEC §3) is ``upsample`` (explicit weights, or an
    optimum for a targeted loss) or ``upweight={domain: factor}`` (weights ∝ h*_i·factor_i,
    other domains factor 1); neither → no window (only ``"mixture"``). With ``available_tokens``
    and ``total_tokens`` the window is capped so that no domain is used more than
    ``max_repeats``·available over the whole run (the excess goes to the other domains).
    Weights are renormalised and rounded so that ``check_weights`` accepts them.
    """
    base = _as_weights(h_star, "mixture")
    out = {"mixture": round_weights(base, decimals, "mixture")}
    if upsample is not None and upweight is not None:
        raise FitError("give either upsample (window weights) or upweight (factors), not both")
    if upsample is None and upweight is None:
        return out
    f = float(fraction)
    if not 0 < f < 1:
        raise FitError(f"fraction={f} must be in (0, 1) (SPEC §3: 0.1–0.2)")
    bsum = sum(base.values())
    base = {d: v / bsum for d, v in base.items()}
    if upsample is not None:
        up = _as_weights(upsample, "upsample")
    else:
        factors = {str(d): float(x) for d, x in upweight.items()}
        bad = {d: x for d, x in factors.items() if not (np.isfinite(x) and x > 0)}
        if bad:
            raise FitError(f"upweight factors must be > 0: {bad}")
        unknown = sorted(set(factors) - set(base))
        if unknown:
            raise FitError(f"upweight names domain(s) {unknown} that are not in the mixture {sorted(base)}")
        zero = sorted(d for d in factors if base[d] == 0)
        if zero:
            raise FitError(f"upweight cannot raise {zero}: their base weight is 0; give explicit upsample weights")
        up = {d: base[d] * factors.get(d, 1.0) for d in base}
    usum = sum(up.values())
    up = {d: v / usum for d, v in up.items()}
    if available_tokens is not None and total_tokens is not None:
        T = float(total_tokens)
        names = sorted(set(base) | set(up))
        cap = np.full(len(names), np.inf)
        for i, d in enumerate(names):
            if d in available_tokens:
                budget = max_repeats * float(available_tokens[d])
                used = (1 - f) * T * base.get(d, 0.0)
                if used > budget * (1 + 1e-9):
                    raise FitError(f"the base mixture alone uses {used:.4g} tokens of {d!r} in the first "
                                   f"{1 - f:.0%} of {T:.4g} tokens, more than max_repeats {max_repeats:g} × "
                                   f"{float(available_tokens[d]):.4g} available")
                cap[i] = max(0.0, budget - used) / (f * T)
        u = _water_fill(np.array([up.get(d, 0.0) for d in names]), cap, names,
                        np.array([base.get(d, 0.0) for d in names]))
        up = dict(zip(names, u.tolist()))
    out["upsample"] = {"weights": round_weights(up, decimals, "upsample"), "fraction": f}
    return out
