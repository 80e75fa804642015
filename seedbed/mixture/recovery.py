"""Loss tables generated from *known* mixture-law parameters, for recovery tests and the fit benchmark.

A fitter is only trustworthy if it gives back the law that generated its data. These tables are
numbers by construction (no text is involved): per-domain laws in which a domain's own weight
helps its loss most, evaluated on mixtures spread over the simplex (:func:`simplex_design`, the
same design the proxy sweep uses) at a grid of model sizes and tokens-per-parameter, with
relative Gaussian noise. The result is in the public table layout that :func:`load_table` reads.
"""

from __future__ import annotations

import numpy as np

from seedbed.mixture import laws
from seedbed.mixture.sweep import simplex_design


def random_laws(k: int, law: str, rng: np.random.Generator) -> list[laws.LawParams]:
    """One law per domain loss: its own domain helps most (C_j ∈ [1.6, 2.4]), every domain a little."""
    out = []
    for j in range(k):
        C = rng.uniform(0.7, 1.3, k)
        C[j] = rng.uniform(1.6, 2.4)
        g = rng.uniform(0.3, 0.6, k)
        E = rng.uniform(1.5, 2.2)
        A, al, B, be = rng.uniform(300, 500), rng.uniform(0.28, 0.38), rng.uniform(300, 500), rng.uniform(0.25, 0.33)
        if law == "additive":
            out.append(laws.AdditiveParams(E, C, g, A, al, B, be))
        elif law == "joint":
            out.append(laws.JointParams(E, C, g, A * rng.uniform(0.8, 1.25, k), rng.uniform(0.8, 1.2), al,
                                        B * rng.uniform(0.8, 1.25, k), rng.uniform(0.8, 1.2), be))
        else:
            raise ValueError(f"unknown law {law!r}; use 'additive' or 'joint'")
    return out


def law_table(domains: list[str], law: str, n_mixtures: int, sizes, tokens_per_param, *, min_weight: float = 0.1,
              noise: float = 1e-3, seed: int = 0):
    """(DataFrame in the public layout, {domain: true law}): every mixture × size × tokens-per-parameter
    point, ``<domain>_loss`` = the domain's law × (1 + noise·N(0, 1)); ``mixture`` is the mixture's index and ``run_id`` names the (mixture, size) run."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    H = np.array([[m[d] for d in domains] for m in simplex_design(domains, n_mixtures, min_weight, seed)])
    truth = dict(zip(domains, random_laws(len(domains), law, rng)))
    pts = [(i, h, n, r * n) for i, h in enumerate(H) for n in sizes for r in tokens_per_param]
    Hm = np.array([p[1] for p in pts])
    N = np.array([p[2] for p in pts], dtype=np.float64)
    D = np.array([p[3] for p in pts], dtype=np.float64)
    cols = {f"weight_{d}": Hm[:, i] for i, d in enumerate(domains)}
    cols["model_size"], cols["n_tokens"] = N, D
    for d, p in truth.items():
        L = laws.predict(p, Hm, N, D)
        cols[f"{d}_loss"] = L * (1 + noise * rng.standard_normal(len(L)))
    cols["mixture"] = [p[0] for p in pts]
    cols["run_id"] = [f"m{p[0]}-n{p[2]:.0e}" for p in pts]
    return pd.DataFrame(cols), truth
