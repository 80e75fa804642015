"""Token-denominated schedules: mixture phases (SPEC §3) and learning-rate shapes.

A run's tokens are split into phases; each phase has its own mixture weights over the domains.
The usual schedule is the base mixture followed by an end-of-training window (default 15% of
the tokens, SPEC §3's 10–20%) that upsamples the small targeted domains. Phase lengths are whole
sequences, so a phase boundary is a token position that a resumed run reaches exactly as the
uninterrupted run did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: SPEC §3: the end-of-training window balancing general LM quality and targeted benchmarks.
DEFAULT_UPSAMPLE_FRACTION = 0.15
_WEIGHT_TOL = 1e-6


class ScheduleError(ValueError):
    """A mixture or schedule that cannot be trained: bad weights, durations, unknown domains."""


def check_weights(weights: dict, domains: list[str] | None, what: str) -> dict[str, float]:
    """Validate one mixture: finite, non-negative, summing to 1, only known domains."""
    if not isinstance(weights, dict) or not weights:
        raise ScheduleError(f"{what}: mixture weights must be a non-empty mapping domain → weight")
    out = {}
    for d, w in weights.items():
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise ScheduleError(f"{what}: weight of {d!r} is not a number: {w!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ScheduleError(f"{what}: weight of {d!r} is {w}; weights must be finite and >= 0")
        out[str(d)] = w
    total = sum(out.values())
    if abs(total - 1.0) > _WEIGHT_TOL:
        raise ScheduleError(f"{what}: weights sum to {total:.6g}, not 1 ({out})")
    if domains is not None:
        unknown = sorted(set(out) - set(domains))
        if unknown:
            raise ScheduleError(f"{what}: unknown domain(s) {unknown}; the token dataset has {sorted(domains)}")
    return out


@dataclass(frozen=True)
class Phase:
    name: str
    sequences: int  # whole sequences of seq_len tokens
    weights: dict[str, float] = field(hash=False)


@dataclass(frozen=True)
class Schedule:
    phases: tuple[Phase, ...]
    seq_len: int

    @property
    def total_sequences(self) -> int:
        return sum(p.sequences for p in self.phases)

    @property
    def total_tokens(self) -> int:
        return self.total_sequences * self.seq_len

    def phase_index(self, seq_index: int) -> int:
        """The phase that the ``seq_index``-th sequence of the run belongs to."""
        end = 0
        for i, p in enumerate(self.phases):
            end += p.sequences
            if seq_index < end:
                return i
        raise IndexError(f"sequence {seq_index} is past the end of the schedule ({end} sequences)")

    def phase_start(self, i: int) -> int:
        return sum(p.sequences for p in self.phases[:i])

    def describe(self) -> list[dict]:
        out, start = [], 0
        for p in self.phases:
            out.append({"name": p.name, "start_token": start * self.seq_len, "tokens": p.sequences * self.seq_len,
                        "weights": dict(p.weights)})
            start += p.sequences
        return out


def build_schedule(total_sequences: int, seq_len: int, mixture: dict, domains: list[str] | None = None,
                   upsample: dict | None = None, phases: list[dict] | None = None) -> Schedule:
    """Build the run's phases.

    Either ``phases`` (explicit: each ``{"name", "weights", "fraction" | "tokens"}``, durations
    summing to the run's tokens) or ``mixture`` plus an optional ``upsample`` window
    ``{"weights": {...}, "fraction": 0.15}`` (or ``"tokens"``) at the end.
    """
    if total_sequences < 1:
        raise ScheduleError("the run has no sequences to train on")
    total_tokens = total_sequences * seq_len
    if phases is None:
        base = check_weights(mixture, domains, "mixture")
        phases = [{"name": "base", "weights": base}]
        if upsample:
            up = dict(upsample)
            w = check_weights(up.get("weights"), domains, "upsample")
            if "tokens" in up:
                tail = int(up["tokens"])
                if not 0 < tail < total_tokens:
                    raise ScheduleError(f"upsample.tokens={tail} must be inside the run's {total_tokens} tokens")
                phases[0]["tokens"] = total_tokens - tail
                phases.append({"name": "upsample", "weights": w, "tokens": tail})
            else:
                frac = float(up.get("fraction", DEFAULT_UPSAMPLE_FRACTION))
                if not 0 < frac < 1:
                    raise ScheduleError(f"upsample.fraction={frac} must be in (0, 1)")
                phases[0]["fraction"] = 1 - frac
                phases.append({"name": "upsample", "weights": w, "fraction": frac})
        else:
            phases[0]["fraction"] = 1.0
    if not phases:
        raise ScheduleError("a schedule needs at least one phase")
    kinds = {("tokens" in p) for p in phases}
    if len(kinds) != 1 or any(("tokens" in p) == ("fraction" in p) for p in phases):
        raise ScheduleError("give every phase either 'tokens' or 'fraction' (the same kind for all phases)")
    names = [str(p.get("name", f"phase{i}")) for i, p in enumerate(phases)]
    if len(set(names)) != len(names):
        raise ScheduleError(f"phase names must be unique: {names}")
    if "tokens" in phases[0]:
        toks = [int(p["tokens"]) for p in phases]
        if sum(toks) != total_tokens:
            raise ScheduleError(f"phase durations sum to {sum(toks)} tokens, but the run trains {total_tokens} "
                                f"({total_sequences} sequences × {seq_len})")
        fracs = [t / total_tokens for t in toks]
    else:
        fracs = [float(p["fraction"]) for p in phases]
        if any(f <= 0 for f in fracs) or abs(sum(fracs) - 1) > 1e-9:
            raise ScheduleError(f"phase fractions must be > 0 and sum to 1, got {fracs}")
    # whole sequences per phase; the last phase absorbs rounding so durations sum exactly
    seqs, acc = [], 0.0
    for f in fracs[:-1]:
        acc += f
        seqs.append(round(acc * total_sequences) - sum(seqs))
    seqs.append(total_sequences - sum(seqs))
    out = []
    for name, p, n in zip(names, phases, seqs):
        if n < 1:
            raise ScheduleError(f"phase {name!r} is shorter than one sequence at this run length")
        out.append(Phase(name, n, check_weights(p.get("weights"), domains, f"phase {name!r}")))
    return Schedule(tuple(out), seq_len)


# ----------------------------------------------------------------------------- learning rate

LR_SCHEDULES = ("cosine", "constant", "wsd")


def lr_factor(step: int, total_steps: int, kind: str = "cosine", warmup_steps: int = 0,
              min_ratio: float = 0.1, decay_fraction: float = 0.2) -> float:
    """Multiplier on the peak learning rate before optimizer step ``step`` (0-based).

    - ``cosine``: linear warmup, then cosine from 1 to ``min_ratio`` at the last step;
    - ``constant``: linear warmup, then 1 (proxy runs for mixture laws, SPEC §2);
    - ``wsd``: warmup, stable at 1, then linear decay to ``min_ratio`` over the last
      ``decay_fraction`` of the steps (warmup-stable-decay).
    """
    if kind not in LR_SCHEDULES:
        raise ScheduleError(f"unknown lr schedule {kind!r}; known: {', '.join(LR_SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        span = max(1, total_steps - warmup_steps - 1)
        t = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    decay_steps = max(1, round(decay_fraction * total_steps))
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return 1.0
    t = min(1.0, (step - decay_start + 1) / decay_steps)
    return 1.0 - (1 - min_ratio) * t
