"""The platform file: cluster settings for every seedbed pipeline task, read at compile time.

Pod placement is part of the compiled YAML (its kubernetes platform document), so the file is read
when the pipelines are imported: ``seedbed compile --platform platform.yaml`` (or
``SEEDBED_PLATFORM=platform.yaml``); ``pipelines/_common.py`` applies it to each task. Every key is
optional (docs/running-on-kubeflow.md)::

    s3_secret: seedbed-s3          # Secret whose AWS_* keys every task gets as env
    node_selector: {pool: cpu}     # CPU task pods
    tolerations: []                # CPU task pods (Kubernetes form: key, operator, value, effect)
    timeout_s: 86400               # activeDeadlineSeconds of every task pod but the launchers; 0: none
    retries: 2                     # retries of every task (backoff 30 s, doubling); 0: none
    gpu:
      resource: nvidia.com/gpu     # the accelerator GPU tasks request
      node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}   # GPU task pods and TrainJob nodes
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      shm_size: 16Gi               # memory-backed /dev/shm of GPU tasks
    tasks:                         # per component: cpu, memory, cpu_limit, memory_limit, gpus, timeout_s, retries
      embed: {gpus: 2, memory: 64G}
      launch-training: {gpus: 8}   # mode=local: train inside the launcher's pod

:meth:`Platform.load` checks the file's keys, label maps, tolerations, quantities and counts, and
raises a ``ValueError`` that names the file and the key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seedbed.fields import check_fields
from seedbed.launch.trainjob import check_label_map, check_tolerations, quantity


@dataclass(frozen=True)
class TaskSettings:
    """One component's ``tasks.<name>`` entry; None: the task's or the platform's default."""

    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpus: int | None = None
    timeout_s: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class GpuSettings:
    """The ``gpu`` section: what GPU tasks request and where they (and TrainJob nodes) run."""

    resource: str = "nvidia.com/gpu"
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    shm_size: str = "16Gi"


@dataclass(frozen=True)
class Platform:
    """The whole platform file; :meth:`load` reads and checks one (no file: the defaults)."""

    #: Kubernetes Secret with the object-store settings (manifests/base/secret-s3.yaml)
    s3_secret: str = os.environ.get("SEEDBED_S3_SECRET", "seedbed-s3")
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    timeout_s: int = 86400
    retries: int = 2
    gpu: GpuSettings = field(default_factory=GpuSettings)
    tasks: dict = field(default_factory=dict)  # component name -> TaskSettings

    @classmethod
    def load(cls, path: str | None) -> "Platform":
        if not path:
            return cls()
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
            check_fields(cls, raw, "platform")
            raw = dict(raw)
            raw["gpu"] = GpuSettings(**check_fields(GpuSettings, raw.get("gpu") or {}, "gpu"))
            if not isinstance(raw.get("tasks") or {}, dict):
                raise ValueError("tasks: expected a mapping of component names to settings")
            raw["tasks"] = {str(name).replace("_", "-"): TaskSettings(**check_fields(TaskSettings, t or {}, f"tasks.{name}"))
                            for name, t in (raw.get("tasks") or {}).items()}
            return cls(**raw).validate()
        except (OSError, yaml.YAMLError, ValueError) as e:
            raise ValueError(f"platform file {path}: {e}") from None

    def validate(self) -> "Platform":
        check_label_map(self.node_selector, "node_selector")
        check_label_map(self.gpu.node_selector, "gpu.node_selector")
        check_tolerations(self.tolerations)
        check_tolerations(self.gpu.tolerations)
        quantity(self.gpu.shm_size, "gpu.shm_size")
        counts = {"timeout_s": self.timeout_s, "retries": self.retries}
        for name, t in self.tasks.items():
            for k in ("cpu", "memory", "cpu_limit", "memory_limit"):
                if getattr(t, k) is not None:
                    quantity(getattr(t, k), f"tasks.{name}.{k}")
            counts.update({f"tasks.{name}.{k}": getattr(t, k) for k in ("gpus", "timeout_s", "retries")
                           if getattr(t, k) is not None})
        for what, n in counts.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{what}: expected an integer >= 0, got {n!r}")
        return self

    @property
    def gpu_node_selector_json(self) -> str:
        return json.dumps(self.gpu.node_selector)

    @property
    def gpu_tolerations_json(self) -> str:
        return json.dumps(self.gpu.tolerations)
