"""KFP pipelines composed from ``components/``. ``seedbed compile`` writes one YAML per entry."""

from __future__ import annotations


def registry() -> dict:
    """Pipeline name (as used by ``seedbed run``/``compile``) → pipeline function."""
    from pipelines.betr_select import betr_select
    from pipelines.curate_and_grow import curate_and_grow
    from pipelines.mixture_fit import mixture_fit
    from pipelines.staged_growth import staged_growth
    from pipelines.train_lm import train_lm

    return {"betr-select": betr_select, "train-lm": train_lm, "staged-growth": staged_growth,
            "mixture-fit": mixture_fit, "curate-and-grow": curate_and_grow}
