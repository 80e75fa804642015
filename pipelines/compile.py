"""Compile every pipeline to the KFP IR YAML that users upload (``seedbed compile``)."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines import registry
from pipelines._common import PLATFORM, SEEN


def compile_all(out_dir: str | Path, names: list[str] | None = None) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipes = registry()
    unknown = sorted(set(names or []) - set(pipes))
    if unknown:
        raise ValueError(f"unknown pipeline(s) {unknown}; known: {sorted(pipes)}")
    stray = sorted(set(PLATFORM.tasks) - SEEN)
    if stray:
        raise ValueError(f"platform file: tasks {stray} name no component; known: {sorted(SEEN)}")
    written = []
    for name, fn in pipes.items():
        if names and name not in names:
            continue
        path = out / f"{name.replace('-', '_')}.yaml"
        compiler.Compiler().compile(pipeline_func=fn, package_path=str(path))
        written.append(path)
    return written
