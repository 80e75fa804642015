"""Comma-separated parameters (pipeline parameters, CLI options, config values) as lists."""

from __future__ import annotations


def csv_list(s) -> list[str]:
    """A comma-separated parameter as its items (stripped; empty ones dropped)."""
    return [x.strip() for x in str(s).split(",") if x.strip()]


def csv_ints(s) -> list[int]:
    """A comma-separated list of counts (``1e6`` and ``2.0`` too) as ints."""
    return [int(float(x)) for x in csv_list(s)]


def csv_floats(s) -> list[float]:
    """A comma-separated list of numbers as floats."""
    return [float(x) for x in csv_list(s)]
