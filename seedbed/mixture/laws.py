"""The two data-mixture scaling laws of SPEC §2, vectorised, with named parameters.

Domains i = 1..k, mixture weights h on the simplex, N = model parameters, D = training tokens:

* **additive** (5+2k parameters; its optimum h* does not depend on N, D)::

      L = E + 1 / (Σ_i C_i h_i^γ_i) + A / N^α + B / D^β

* **joint** (5+4k parameters; the optimum moves with scale)::

      L = E + 1 / (Σ_i C_i h_i^γ_i) + A_h / N^α + B_h / D^β
      A_h = (Σ_i C^A_i h_i)^γ_A,   B_h = (Σ_i C^B_i h_i)^γ_B

  At γ_A = γ_B = 1, C^A_i = A, C^B_i = B it *is* the additive law (Σ h_i = 1), which is how
  :func:`additive_to_joint` warm-starts a joint fit from an additive one.

Sign conventions. Every parameter is strictly positive — E, C_i, γ_i, A, α, B, β and, in the
joint law, C^A_i, γ_A, C^B_i, γ_B — so the optimiser works on their logarithms (``theta``) and a
fitted law can never go negative or grow with N or D. E > 0 is the usual irreducible loss
(E → 0 is reachable as log E → −∞). γ_i > 0 makes every domain's term non-decreasing in its
weight, and h_i = 0 contributes exactly 0 (h^γ → 0 for γ > 0); a mixture with every weight 0 is
not a mixture (1/S = ∞). N and D are raw counts (parameters, tokens) in the public parameters.

Internally the fit measures N and D in units of reference scales N0, D0 (the geometric means of
the table) so that A/N^α and its gradient are O(1) and log A, α are not nearly collinear;
:func:`to_theta`/:func:`from_theta` convert between the public parameters (raw units) and the
internal log-space vector. For the additive law A' = A·N0^−α; for the joint law
C^A'_i = C^A_i·N0^(−α/γ_A) (the same for B, D0, β, γ_B), and the vector holds
s_i = γ_A·log C^A'_i rather than log C^A'_i: A_h = (Σ_i h_i e^(s_i/γ_A))^γ_A then keeps its
level e^s when γ_A moves at equal s_i, which takes the worst ridge (level vs γ_A) out of the
optimiser's way; L-BFGS-B needs far fewer iterations on the joint law that way.

Identifiability. Only E + 1/S(h) is pinned down by runs at fixed mixtures (E trades against a
near-constant part of 1/S, and E → 0 is a legitimate fit). When the C^A_i are nearly equal,
A_h is nearly constant and (C^A, γ_A) slide along a ridge; in raw units C^A_i then grows like
N0^(α/γ_A), which is why the fit keeps γ_A, γ_B ≥ 0.1 and α, β ≤ 1.5 (finite in float64).
Compare laws by their predictions, not by these parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

LAWS = ("additive", "joint")


def n_params(law: str, k: int) -> int:
    """Number of free parameters: 5+2k (additive) or 5+4k (joint)."""
    _check_law(law)
    return 5 + 2 * k if law == "additive" else 5 + 4 * k


def _check_law(law: str) -> None:
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; known: {', '.join(LAWS)}")


def param_names(law: str, domains: list[str]) -> list[str]:
    """Names of the parameters in ``theta`` order, e.g. ``["E", "C[web]", …, "gamma[web]", …, "A", …]``."""
    _check_law(law)
    c = [f"C[{d}]" for d in domains]
    g = [f"gamma[{d}]" for d in domains]
    if law == "additive":
        return ["E", *c, *g, "A", "alpha", "B", "beta"]
    return ["E", *c, *g, *[f"C_A[{d}]" for d in domains], "gamma_A", "alpha",
            *[f"C_B[{d}]" for d in domains], "gamma_B", "beta"]


def _vec(x) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


# ----------------------------------------------------------------------------- named parameters


class _Params:
    """What both laws' parameter sets share: per-domain vectors (``per_domain``) and scalars (the other
    fields), coerced on construction; ``to_dict`` names the per-domain entries by domain."""

    law: ClassVar[str]
    per_domain: ClassVar[tuple[str, ...]]

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            setattr(self, f.name, _vec(v) if f.name in self.per_domain else float(v))

    @property
    def k(self) -> int:
        return len(self.C)

    def to_dict(self, domains: list[str]) -> dict:
        return {"law": self.law, **{f.name: _named(getattr(self, f.name), domains) if f.name in self.per_domain
                                    else getattr(self, f.name) for f in fields(self)}}


@dataclass
class AdditiveParams(_Params):
    """L = E + 1/(Σ C_i h_i^γ_i) + A/N^α + B/D^β (raw N, D)."""

    E: float
    C: np.ndarray  # [k]
    gamma: np.ndarray  # [k]
    A: float
    alpha: float
    B: float
    beta: float
    law: ClassVar[str] = "additive"
    per_domain: ClassVar[tuple[str, ...]] = ("C", "gamma")


@dataclass
class JointParams(_Params):
    """L = E + 1/(Σ C_i h_i^γ_i) + (Σ C^A_i h_i)^γ_A/N^α + (Σ C^B_i h_i)^γ_B/D^β (raw N, D)."""

    E: float
    C: np.ndarray  # [k]
    gamma: np.ndarray  # [k]
    C_A: np.ndarray  # [k]
    gamma_A: float
    alpha: float
    C_B: np.ndarray  # [k]
    gamma_B: float
    beta: float
    law: ClassVar[str] = "joint"
    per_domain: ClassVar[tuple[str, ...]] = ("C", "gamma", "C_A", "C_B")


LawParams = AdditiveParams | JointParams


def _named(v: np.ndarray, domains: list[str]) -> dict:
    if len(domains) != len(v):
        raise ValueError(f"{len(domains)} domain names for {len(v)} per-domain parameters")
    return {d: float(x) for d, x in zip(domains, v)}


def params_from_dict(d: dict, domains: list[str] | None = None) -> LawParams:
    """Inverse of ``to_dict``: per-domain entries are dicts keyed by domain (ordered by ``domains``,
    default: their own order) or plain lists."""
    law = d.get("law", "joint" if "C_A" in d else "additive")
    _check_law(law)

    def per(name):
        v = d[name]
        if isinstance(v, dict):
            keys = list(v) if domains is None else list(domains)
            missing = sorted(set(keys) - set(v))
            if missing:
                raise ValueError(f"parameter {name} has no value for domain(s) {missing}")
            return np.array([float(v[k]) for k in keys])
        return _vec(v)

    if law == "additive":
        return AdditiveParams(d["E"], per("C"), per("gamma"), d["A"], d["alpha"], d["B"], d["beta"])
    return JointParams(d["E"], per("C"), per("gamma"), per("C_A"), d["gamma_A"], d["alpha"], per("C_B"),
                       d["gamma_B"], d["beta"])


def additive_to_joint(p: AdditiveParams) -> JointParams:
    """The joint-law parameters that predict exactly what ``p`` predicts on the simplex."""
    k = p.k
    return JointParams(p.E, p.C.copy(), p.gamma.copy(), np.full(k, p.A), 1.0, p.alpha, np.full(k, p.B), 1.0, p.beta)


# ----------------------------------------------------------------------------- prediction


def _mix_powers(H: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """h_i^γ_i elementwise with 0^γ = 0 (γ > 0)."""
    pos = H > 0
    logh = np.log(np.where(pos, H, 1.0))
    return np.where(pos, np.exp(gamma * logh), 0.0)


def _inputs(H, N, D):
    H = np.asarray(H, dtype=np.float64)
    if H.ndim == 1:
        H = H[None, :]
    if H.ndim != 2:
        raise ValueError(f"H must be [n, k] (or [k]), got shape {H.shape}")
    if np.any(H < 0) or not np.all(np.isfinite(H)):
        raise ValueError("mixture weights must be finite and >= 0")
    N = np.broadcast_to(np.asarray(N, dtype=np.float64), (H.shape[0],))
    D = np.broadcast_to(np.asarray(D, dtype=np.float64), (H.shape[0],))
    if np.any(N <= 0) or np.any(D <= 0):
        raise ValueError("N (parameters) and D (tokens) must be > 0")
    return H, N, D


def predict(params: LawParams, H, N, D) -> np.ndarray:
    """Predicted loss for mixtures ``H`` [n, k] (or one [k]) at model sizes ``N`` and token counts
    ``D`` (scalars or [n]). Returns [n]."""
    H, N, D = _inputs(H, N, D)
    if H.shape[1] != params.k:
        raise ValueError(f"H has {H.shape[1]} domains, the law has {params.k}")
    S = _mix_powers(H, params.gamma) @ params.C
    with np.errstate(divide="ignore"):
        out = params.E + 1.0 / S
    if isinstance(params, AdditiveParams):
        out = out + np.exp(np.log(params.A) - params.alpha * np.log(N))
        out = out + np.exp(np.log(params.B) - params.beta * np.log(D))
    else:
        out = out + np.exp(params.gamma_A * np.log(H @ params.C_A) - params.alpha * np.log(N))
        out = out + np.exp(params.gamma_B * np.log(H @ params.C_B) - params.beta * np.log(D))
    return out


def predict_grad_h(params: LawParams, h, N: float, D: float) -> tuple[float, np.ndarray]:
    """Loss and its gradient with respect to the mixture ``h`` [k] at one (N, D).

    ∂/∂h_i of C_i h_i^γ_i is infinite at h_i = 0 when γ_i < 1; callers keep h_i > 0 where the
    weight is free (mirror descent does)."""
    h = np.asarray(h, dtype=np.float64)
    pos = h > 0
    logh = np.log(np.where(pos, h, 1.0))
    P = np.where(pos, np.exp(params.gamma * logh), 0.0)
    S = float(P @ params.C)
    at_zero = np.where(params.gamma < 1, np.inf, np.where(params.gamma == 1, 1.0, 0.0))  # d(h^γ)/dh at h = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dP = np.where(pos, params.gamma * np.exp((params.gamma - 1) * logh), at_zero)
    L = params.E + 1.0 / S
    g = -(params.C * dP) / S**2
    if isinstance(params, AdditiveParams):
        L += params.A * N ** -params.alpha + params.B * D ** -params.beta
    else:
        SA, SB = float(h @ params.C_A), float(h @ params.C_B)
        tN = np.exp(params.gamma_A * np.log(SA) - params.alpha * np.log(N))
        tD = np.exp(params.gamma_B * np.log(SB) - params.beta * np.log(D))
        L += tN + tD
        g = g + tN * params.gamma_A * params.C_A / SA + tD * params.gamma_B * params.C_B / SB
    return float(L), g


# ----------------------------------------------------------------------------- log-space parametrisation


def to_theta(p: LawParams, N0: float = 1.0, D0: float = 1.0) -> np.ndarray:
    """Public parameters (raw N, D) → the optimiser's log-space vector with N, D in units of N0, D0."""
    lN0, lD0 = np.log(N0), np.log(D0)
    head = [np.log(p.E)], np.log(p.C), np.log(p.gamma)
    if isinstance(p, AdditiveParams):
        tail = [np.log(p.A) - p.alpha * lN0, np.log(p.alpha), np.log(p.B) - p.beta * lD0, np.log(p.beta)]
        return np.concatenate([*head, tail])
    # s_i = γ_A·log C^A'_i (see the module docstring)
    return np.concatenate([*head, p.gamma_A * np.log(p.C_A) - p.alpha * lN0, [np.log(p.gamma_A), np.log(p.alpha)],
                           p.gamma_B * np.log(p.C_B) - p.beta * lD0, [np.log(p.gamma_B), np.log(p.beta)]])


def from_theta(theta, law: str, k: int, N0: float = 1.0, D0: float = 1.0) -> LawParams:
    """Inverse of :func:`to_theta`."""
    t = np.asarray(theta, dtype=np.float64)
    if t.shape != (n_params(law, k),):
        raise ValueError(f"theta has shape {t.shape}; the {law} law with k={k} has {n_params(law, k)} parameters")
    lN0, lD0 = np.log(N0), np.log(D0)
    E, C, g = np.exp(t[0]), np.exp(t[1:1 + k]), np.exp(t[1 + k:1 + 2 * k])
    r = t[1 + 2 * k:]
    if law == "additive":
        alpha, beta = np.exp(r[1]), np.exp(r[3])
        return AdditiveParams(E, C, g, np.exp(r[0] + alpha * lN0), alpha, np.exp(r[2] + beta * lD0), beta)
    gA, alpha = np.exp(r[k]), np.exp(r[k + 1])
    gB, beta = np.exp(r[2 * k + 2]), np.exp(r[2 * k + 3])
    return JointParams(E, C, g, np.exp((r[:k] + alpha * lN0) / gA), gA, alpha,
                       np.exp((r[k + 2:2 * k + 2] + beta * lD0) / gB), gB, beta)


def additive_theta_to_joint(theta, k: int) -> np.ndarray:
    """Map an additive ``theta`` to the joint ``theta`` that predicts the same on the simplex
    (same reference scales): C^A'_i = A', γ_A = 1 (so s_i = log A'), C^B'_i = B', γ_B = 1."""
    t = np.asarray(theta, dtype=np.float64)
    head, (lA, lal, lB, lbe) = t[:1 + 2 * k], t[1 + 2 * k:]
    return np.concatenate([head, np.full(k, lA), [0.0, lal], np.full(k, lB), [0.0, lbe]])


@dataclass
class Design:
    """Precomputed inputs of a fit: mixtures and log-scaled sizes (N/N0, D/D0)."""

    H: np.ndarray  # [n, k], rows on the simplex
    lnn: np.ndarray  # [n] log(N/N0)
    lnd: np.ndarray  # [n] log(D/D0)
    logH: np.ndarray = field(init=False)  # log h with 0 where h = 0
    pos: np.ndarray = field(init=False)

    def __post_init__(self):
        self.pos = self.H > 0
        self.logH = np.log(np.where(self.pos, self.H, 1.0))

    @property
    def k(self) -> int:
        return self.H.shape[1]


def _log_mix(z: np.ndarray, HT: np.ndarray) -> np.ndarray:
    """log Σ_i h_i exp(z_i) for z [m, k] and Hᵀ [k, n] → [m, n], shifted by max z (no overflow)."""
    mx = z.max(1, keepdims=True)
    return mx + np.log(np.exp(z - mx) @ HT)


def _log_mix_w(z: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log Σ_i h_i exp(z_i) for one z [k] over H [n, k] → [n], and the weights h_i e^z_i / Σ [n, k]."""
    q = H * np.exp(z - z.max())
    tot = q.sum(1)
    return z.max() + np.log(tot), q / tot[:, None]


def theta_predict(theta: np.ndarray, law: str, X: Design) -> np.ndarray:
    """Predictions for a batch of parameter vectors ``theta`` [m, p] → [m, n] (or [p] → [n])."""
    t = np.asarray(theta, dtype=np.float64)
    single = t.ndim == 1
    t = np.atleast_2d(t)
    k = X.k
    E = np.exp(t[:, :1])
    C, g = np.exp(t[:, 1:1 + k]), np.exp(t[:, 1 + k:1 + 2 * k])
    r = t[:, 1 + 2 * k:]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        P = np.exp(g[:, None, :] * X.logH[None]) * X.pos[None]  # [m, n, k]
        S = np.einsum("mnk,mk->mn", P, C)
        out = E + 1.0 / S
        if law == "additive":
            alpha, beta = np.exp(r[:, 1:2]), np.exp(r[:, 3:4])
            out = out + np.exp(r[:, 0:1] - alpha * X.lnn[None]) + np.exp(r[:, 2:3] - beta * X.lnd[None])
        else:
            sA, gA, alpha = r[:, :k], np.exp(r[:, k:k + 1]), np.exp(r[:, k + 1:k + 2])
            sB, gB, beta = r[:, k + 2:2 * k + 2], np.exp(r[:, 2 * k + 2:2 * k + 3]), np.exp(r[:, 2 * k + 3:])
            out = out + np.exp(gA * _log_mix(sA / gA, X.H.T) - alpha * X.lnn[None])
            out = out + np.exp(gB * _log_mix(sB / gB, X.H.T) - beta * X.lnd[None])
    return out[0] if single else out


def theta_predict_jac(theta: np.ndarray, law: str, X: Design) -> tuple[np.ndarray, np.ndarray]:
    """Predictions [n] and their Jacobian [n, p] with respect to the log-space ``theta`` [p]."""
    t = np.asarray(theta, dtype=np.float64)
    k = X.k
    n = X.H.shape[0]
    J = np.empty((n, t.size))
    E = np.exp(t[0])
    C, g = np.exp(t[1:1 + k]), np.exp(t[1 + k:1 + 2 * k])
    r = t[1 + 2 * k:]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        P = np.exp(g * X.logH) * X.pos  # [n, k]
        CP = P * C
        S = CP.sum(1)
        inv2 = 1.0 / S**2
        pred = E + 1.0 / S
        J[:, 0] = E
        J[:, 1:1 + k] = -CP * inv2[:, None]
        J[:, 1 + k:1 + 2 * k] = -CP * X.logH * g * inv2[:, None]
        o = 1 + 2 * k
        if law == "additive":
            alpha, beta = np.exp(r[1]), np.exp(r[3])
            tN = np.exp(r[0] - alpha * X.lnn)
            tD = np.exp(r[2] - beta * X.lnd)
            J[:, o] = tN
            J[:, o + 1] = -tN * X.lnn * alpha
            J[:, o + 2] = tD
            J[:, o + 3] = -tD * X.lnd * beta
        else:
            sA, gA, alpha = r[:k], np.exp(r[k]), np.exp(r[k + 1])
            sB, gB, beta = r[k + 2:2 * k + 2], np.exp(r[2 * k + 2]), np.exp(r[2 * k + 3])
            # log A_h = γ_A·log Σ_i h_i exp(s_i/γ_A); w = the softmax-like weights h_i e^(s_i/γ_A) / Σ
            lSA, wA = _log_mix_w(sA / gA, X.H)
            lSB, wB = _log_mix_w(sB / gB, X.H)
            tN = np.exp(gA * lSA - alpha * X.lnn)
            tD = np.exp(gB * lSB - beta * X.lnd)
            J[:, o:o + k] = tN[:, None] * wA
            J[:, o + k] = tN * (gA * lSA - wA @ sA)
            J[:, o + k + 1] = -tN * X.lnn * alpha
            o2 = o + k + 2
            J[:, o2:o2 + k] = tD[:, None] * wB
            J[:, o2 + k] = tD * (gB * lSB - wB @ sB)
            J[:, o2 + k + 1] = -tD * X.lnd * beta
        pred = pred + tN + tD
    return pred, J
