"""Run a pipeline on this machine with ``kfp.local`` (SubprocessRunner, current environment).

Each task runs as a subprocess of this Python environment (``use_venv=False``: about 0.1 s of
overhead per task, no image pulls), so the seedbed library must be installed here, which
``scripts/env.sh`` does. KFP artifacts go under ``<work>/kfp``; the data itself under ``work_uri``.
"""

from __future__ import annotations

import json
from pathlib import Path

from kfp import local

from pipelines import registry


def run_local(name: str, params: dict, pipeline_root: str | Path) -> dict:
    """Run pipeline ``name`` with ``params``; returns the pipeline outputs as {name: uri/value}."""
    pipes = registry()
    if name not in pipes:
        raise ValueError(f"unknown pipeline {name!r}; known: {sorted(pipes)}")
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(Path(pipeline_root).resolve()),
        raise_on_error=True,
    )
    task = pipes[name](**params)
    outputs = {}
    for key, val in getattr(task, "outputs", {}).items():
        outputs[key] = getattr(val, "uri", val)
    return outputs


def latest_run_dir(pipeline_root: str | Path, name: str) -> Path | None:
    """The newest ``kfp.local`` run folder of pipeline ``name`` under ``pipeline_root``."""
    runs = sorted(Path(pipeline_root).glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def load_json(path: str | Path):
    return json.loads(Path(path).read_text())
