"""Start the training entrypoint: locally under torchrun, or on a cluster as a Kubeflow TrainJob.

:func:`launch` is what the ``launch_training`` component calls: it reads ``out_uri`` from the
training config, runs the job (``mode="local"``: :func:`seedbed.launch.local.run_torchrun_local`;
``mode="cluster"``: :func:`seedbed.launch.trainjob.render_trainjob` then
:func:`~seedbed.launch.trainjob.submit_and_watch`) and returns the run's ``summary.json`` with its
scalar fields picked out as metrics.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["MODES", "launch", "read_out_uri", "read_summary", "scalar_metrics", "spec_from_args"]

MODES = ("local", "cluster")


def _json_arg(text: str, name: str, empty: str):
    from seedbed.launch.trainjob import LaunchError

    try:
        return json.loads(text or empty)
    except json.JSONDecodeError as e:
        raise LaunchError(f"{name}: not valid JSON ({e}): {text!r}") from None


def spec_from_args(*, node_selector_json: str = "", tolerations_json: str = "", **fields) -> dict:
    """The ``spec`` :func:`launch` takes, from a component's flat arguments: ``fields`` (any
    :class:`~seedbed.launch.trainjob.LaunchSpec` fields) as given, ``node_selector`` and
    ``tolerations`` parsed from their JSON strings ("" → none); bad JSON raises a
    :class:`~seedbed.launch.trainjob.LaunchError` naming the argument."""
    return {**fields, "node_selector": _json_arg(node_selector_json, "node_selector_json", "{}"),
            "tolerations": _json_arg(tolerations_json, "tolerations_json", "[]")}


def read_out_uri(config_uri: str) -> str:
    """``out_uri`` of the training config JSON at ``config_uri``."""
    from seedbed import store
    from seedbed.launch.trainjob import LaunchError

    try:
        cfg = store.read_json(config_uri)
    except store.NotFound:
        raise LaunchError(f"training config not found at {config_uri}") from None
    except store.StoreError as e:
        raise LaunchError(f"cannot read the training config: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("out_uri"), str) or not cfg["out_uri"]:
        raise LaunchError(f"training config at {config_uri} has no 'out_uri' (where the run writes its outputs)")
    return cfg["out_uri"]


def scalar_metrics(summary: dict) -> dict[str, float]:
    """The finite top-level numbers of a summary (bools and nested values left out)."""
    out = {}
    for k, v in (summary or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


def read_summary(out_uri: str) -> dict:
    from seedbed import store
    from seedbed.launch.trainjob import LaunchError

    uri = store.join(out_uri, "summary.json")
    try:
        summary = store.read_json(uri)
    except store.NotFound:
        raise LaunchError(f"training finished but wrote no summary at {uri}") from None
    if not isinstance(summary, dict):
        raise LaunchError(f"{uri}: expected a JSON object, got {type(summary).__name__}")
    return summary


def launch(
    config_uri: str,
    mode: str,
    spec: dict | None = None,
    *,
    record_path: str | Path | None = None,
    timeout_s: float | None = None,
    log: Callable[[str], None] = print,
    api=None,
    core_api=None,
    log_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run training for ``config_uri`` and return ``{"out_uri", "summary", "metrics", "record"}``.

    ``spec``: :class:`~seedbed.launch.trainjob.LaunchSpec` fields (``config_uri`` is filled in;
    an empty ``name`` becomes :func:`~seedbed.launch.trainjob.default_name`, an empty ``namespace``
    the current one; ``s3_secret`` / ``gpu_resource`` default to ``$SEEDBED_S3_SECRET`` /
    ``$SEEDBED_GPU_RESOURCE``, which the compiled pipelines set from the platform file). Local mode uses ``nodes``, ``procs_per_node``, ``env``, ``entry_args`` and
    ``entry_module`` from it. ``record_path``: where to write what was run (the TrainJob YAML, or
    the local torchrun command lines).
    """
    import yaml

    from seedbed.launch import local, trainjob

    if mode not in MODES:
        raise trainjob.LaunchError(f"mode {mode!r}: must be one of {list(MODES)}")
    spec = dict(spec or {})
    out_uri = read_out_uri(config_uri)
    timeout = float(timeout_s) if timeout_s and float(timeout_s) > 0 else None

    if mode == "local":
        nodes = trainjob._positive_int(spec.get("nodes", 1), "nodes")
        procs = trainjob._positive_int(spec.get("procs_per_node", 1), "procs_per_node")
        env = trainjob.LaunchSpec._check_env(spec.get("env") or {})
        entry = ["--config", config_uri, *(spec.get("entry_args") or [])]
        module = spec.get("entry_module") or local.ENTRY_MODULE
        port = local.free_port()
        record = {
            "mode": "local",
            "commands": [local.torchrun_command(entry, nnodes=nodes, nproc_per_node=procs, node_rank=i,
                                                master_port=port, module=module) for i in range(nodes)],
        }
        if record_path:
            Path(record_path).write_text(yaml.safe_dump(record, sort_keys=False))
        local.run_torchrun_local(entry, nnodes=nodes, nproc_per_node=procs, env=env, timeout_s=timeout,
                                 log_dir=log_dir, master_port=port, module=module, log=log)
    else:
        spec["config_uri"] = config_uri
        # the platform file's Secret and GPU resource, which the compiled pipeline gives every task as env
        for key, var in (("s3_secret", "SEEDBED_S3_SECRET"), ("gpu_resource", "SEEDBED_GPU_RESOURCE")):
            if key not in spec and os.environ.get(var):
                spec[key] = os.environ[var]
        if not spec.get("name"):
            spec["name"] = trainjob.default_name(config_uri)
        if not spec.get("namespace"):
            spec["namespace"] = trainjob.current_namespace()
        launch_spec = trainjob.LaunchSpec.from_dict(spec)
        manifest = trainjob.render_trainjob(launch_spec)
        record = manifest
        if record_path:
            Path(record_path).write_text(trainjob.trainjob_yaml(manifest))
        kwargs = {"timeout_s": timeout} if timeout else {}
        trainjob.submit_and_watch(manifest, api=api, core_api=core_api, log=log, **kwargs)

    summary = read_summary(out_uri)
    return {"out_uri": out_uri, "summary": summary, "metrics": scalar_metrics(summary), "record": record}
