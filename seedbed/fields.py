"""Building a dataclass from a user's mapping (a JSON config, a launch spec) with named errors."""

from __future__ import annotations

import dataclasses


def check_fields(cls, d, what: str, error: type[Exception] = ValueError) -> dict:
    """``d`` as keyword arguments for dataclass ``cls``: a mapping with no unknown and no missing fields."""
    if not isinstance(d, dict):
        raise error(f"{what}: expected a JSON object / mapping, got {type(d).__name__}")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(d) - names)
    if unknown:
        raise error(f"{what}: unknown field(s) {unknown}; known: {sorted(names)}")
    missing = sorted(f.name for f in fields if f.name not in d
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise error(f"{what}: missing required field(s) {missing}")
    return d
