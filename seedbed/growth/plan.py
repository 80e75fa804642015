"""Series plan for staged growth (SPEC §4): what each stage trains so the series costs what its
largest model alone costs.

Series X_1 < … < X_n (parameters), token targets T_i, FLOPs(X, T) = 6·X·T. Stage 1 trains X_1
for T_1 tokens. Stage i ≥ 2 starts from grow(θ_{i-1}) and trains

    D_i = (FLOPs(X_i, T_i) − C_{i-1}) / (6·X_i),   C_{i-1} = Σ_{j<i} 6·X_j·D_j = FLOPs(X_{i-1}, T_{i-1})

tokens, where C is the compute the series has spent so far (it telescopes: after stage i the
series has spent exactly FLOPs(X_i, T_i), so the whole series costs FLOPs(X_n, T_n)). Stage i's
model is released: at that point it has had the compute of X_i trained from scratch on T_i.

X counts parameters by a ``basis``: ``nominal`` (the size a preset's name stands for, 1B = 1e9 —
this reproduces the paper's 15.4 vs 20.4 ZFLOPs for 1B→8B at 2× Chinchilla), ``non_embedding``
(the usual scaling-law N), or ``total``. ``auto`` = nominal when every preset has one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from seedbed.train.presets import get_preset, param_count

CHINCHILLA_TOKENS_PER_PARAM = 20.0
BASES = ("auto", "nominal", "non_embedding", "total")


class PlanError(ValueError):
    """A series that cannot be planned: shrinking sizes, stages with no tokens, bad options."""


@dataclass
class StagePlan:
    index: int  # 1-based
    preset: str
    params: float  # X_i on the plan's basis
    params_total: int  # every parameter of the built model (embeddings included)
    target_tokens: int  # T_i: the tokens X_i from scratch would train on
    train_tokens: int  # D_i: what this stage trains
    lr: float
    flops: float  # 6·X_i·D_i
    cumulative_flops: float  # C_i
    scratch_flops: float  # FLOPs(X_i, T_i)
    unique_tokens: int | None = None  # fixed data: the series' unique-token budget (T_n)


@dataclass
class SeriesPlan:
    stages: list[StagePlan]
    basis: str
    vocab_size: int
    tokens_per_param: float | None
    fixed_data: bool
    lr_mode: str
    width: str = "zero"
    depth: str = "identity"
    notes: list[str] = field(default_factory=list)

    @property
    def series_flops(self) -> float:
        return self.stages[-1].cumulative_flops

    @property
    def separate_flops(self) -> float:
        """Training every size of the series separately from scratch."""
        return sum(s.scratch_flops for s in self.stages)

    @property
    def saving(self) -> float:
        return 1.0 - self.series_flops / self.separate_flops

    @property
    def series_tokens(self) -> int:
        return sum(s.train_tokens for s in self.stages)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(series_flops=self.series_flops, separate_flops=self.separate_flops, saving=self.saving,
                 series_tokens=self.series_tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SeriesPlan":
        keys = {"stages", "basis", "vocab_size", "tokens_per_param", "fixed_data", "lr_mode", "width", "depth", "notes"}
        d = {k: v for k, v in d.items() if k in keys}
        d["stages"] = [StagePlan(**s) for s in d["stages"]]
        return cls(**d)

    def table(self) -> str:
        """The plan as a text table (what ``seedbed plan-growth`` prints)."""
        hdr = ["stage", "preset", f"X ({self.basis})", "params (all)", "T_i target", "D_i train", "lr",
               "stage FLOPs", "cumulative", "scratch FLOPs"]
        rows = [[str(s.index), s.preset, _num(s.params), _num(s.params_total), _num(s.target_tokens),
                 _num(s.train_tokens), f"{s.lr:.2e}", _flops(s.flops), _flops(s.cumulative_flops),
                 _flops(s.scratch_flops)] for s in self.stages]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        out = [line(hdr), line(["-" * w for w in widths])] + [line(r) for r in rows]
        out.append("")
        out.append(f"series: {_flops(self.series_flops)}, {_num(self.series_tokens)} tokens; each size "
                   f"separately from scratch: {_flops(self.separate_flops)}; saved {100 * self.saving:.1f}%")
        out.append(f"growth: width {self.width}, depth {self.depth}; lr: {self.lr_mode}; optimizer reset and "
                   "warmup after every growth")
        if self.fixed_data:
            out.append(f"fixed data: at most {_num(self.stages[-1].target_tokens)} unique tokens (T_n); the series "
                       f"trains {_num(self.series_tokens)}, so {_num(self.series_tokens - self.stages[-1].target_tokens)}"
                       " are repeats")
        out.extend(self.notes)
        return "\n".join(out)


def _num(x: float) -> str:
    for unit, v in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= v:
            return f"{x / v:.3g}{unit}"
    return f"{x:.3g}"


def _flops(x: float) -> str:
    for unit, v in (("ZFLOPs", 1e21), ("EFLOPs", 1e18), ("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9)):
        if x >= v:
            return f"{x / v:.3g} {unit}"
    return f"{x:.3g} FLOPs"


def _params(name: str, overrides: dict | None, vocab: int, basis: str) -> float:
    p = get_preset(name, overrides)
    if basis == "nominal":
        if p.nominal_params is None:
            raise PlanError(f"preset {name!r} has no nominal size: use basis 'non_embedding' or 'total'")
        return float(p.nominal_params)
    return float(param_count(p, vocab, embeddings=basis == "total"))


def plan_series(presets: list[str], vocab_size: int = 50_304, tokens: list[int] | None = None,
                tokens_per_param: float | None = 2 * CHINCHILLA_TOKENS_PER_PARAM, lr: str | float | list | None = None,
                fixed_data: bool = False, basis: str = "auto", width: str = "zero", depth: str = "identity",
                overrides: dict | None = None) -> SeriesPlan:
    """Plan a growth series.

    ``tokens``: explicit T_i per stage; else T_i = ``tokens_per_param`` · X_i (default 2×
    Chinchilla, the paper's setting). ``lr``: None/"preset" = each preset's learning rate (SPEC
    §4: 1.5e-3 for 1B down to 3e-4 for 8B), a number = that lr for every stage ("fixed"), or a
    list with one lr per stage. ``fixed_data``: the series may not see more unique tokens than
    X_n from scratch (T_n); later stages repeat data.
    """
    presets = [p.strip() for p in presets if str(p).strip()]
    if len(presets) < 2:
        raise PlanError(f"a growth series needs at least two sizes, got {presets}")
    if basis not in BASES:
        raise PlanError(f"unknown parameter basis {basis!r}; known: {', '.join(BASES)}")
    overrides = overrides or {}
    for p in presets:
        try:
            get_preset(p, overrides.get(p))
        except ValueError as e:
            raise PlanError(str(e)) from None
    if basis == "auto":
        basis = "nominal" if all(get_preset(p).nominal_params for p in presets) else "non_embedding"
    X = [_params(p, overrides.get(p), vocab_size, basis) for p in presets]
    for i in range(1, len(X)):
        if X[i] <= X[i - 1]:
            raise PlanError(f"stage {i + 1} ({presets[i]}, {_num(X[i])}) is not larger than stage {i} "
                            f"({presets[i - 1]}, {_num(X[i - 1])}): a series must grow")
    if tokens is not None:
        if len(tokens) != len(presets):
            raise PlanError(f"{len(tokens)} token targets for {len(presets)} stages")
        T = [int(t) for t in tokens]
    else:
        if not tokens_per_param or tokens_per_param <= 0:
            raise PlanError("give token targets or a positive tokens_per_param")
        T = [int(round(tokens_per_param * x)) for x in X]
    if any(t <= 0 for t in T):
        raise PlanError(f"token targets must be positive, got {T}")
    if lr in (None, "preset"):
        lrs, lr_mode = [], "by size (preset)"
        for p in presets:
            v = get_preset(p, overrides.get(p)).lr
            if v is None:
                raise PlanError(f"preset {p!r} has no learning rate: give lr")
            lrs.append(v)
    elif isinstance(lr, (list, tuple)):
        if len(lr) != len(presets):
            raise PlanError(f"{len(lr)} learning rates for {len(presets)} stages")
        lrs, lr_mode = [float(v) for v in lr], "per stage (given)"
    else:
        lrs, lr_mode = [float(lr)] * len(presets), f"fixed {float(lr):g}"
    if any(not math.isfinite(v) or v <= 0 for v in lrs):
        raise PlanError(f"learning rates must be positive, got {lrs}")

    stages, spent = [], 0.0
    for i, (name, x, t) in enumerate(zip(presets, X, T)):
        scratch = 6.0 * x * t
        d = t if i == 0 else int(math.floor((scratch - spent) / (6.0 * x)))
        if d <= 0:
            raise PlanError(
                f"stage {i + 1} ({name}) would train {d} tokens: FLOPs({name}, T={_num(t)}) = {_flops(scratch)} is "
                f"not more than the {_flops(spent)} the series has already spent; raise its token target")
        spent += 6.0 * x * d
        stages.append(StagePlan(i + 1, name, x, param_count(get_preset(name, overrides.get(name)), vocab_size), t, d,
                                lrs[i], 6.0 * x * d, spent, scratch, T[-1] if fixed_data else None))
    return SeriesPlan(stages, basis, vocab_size, tokens_per_param if tokens is None else None, fixed_data, lr_mode,
                      width, depth)
