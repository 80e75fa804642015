"""Settings every seedbed pipeline task gets on a cluster, from a compile-time platform file.

Pod placement is part of the compiled YAML (its kubernetes platform document), so it is read
when the pipelines are imported: ``seedbed compile --platform platform.yaml`` (or
``SEEDBED_PLATFORM=platform.yaml``). Every key is optional (docs/running-on-kubeflow.md)::

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

Every task may be retried: each stage is idempotent on ``work_uri`` (docs/stage-contracts.md), a
retried launcher adopts the TrainJob it created. The GPU node selector and tolerations are also
the default ``node_selector_json`` / ``tolerations_json`` of the training pipelines, so TrainJob
nodes land on the same GPU pool. Caching is off on every task (SPEC §6).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kfp import dsl, kubernetes

from seedbed.fields import check_fields
from seedbed.launch.trainjob import _check_label_map, _check_tolerations, _quantity

S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
#: how long a task without a deadline (a launcher watching training) is assumed to run, for its retry window
MAX_TASK_S = 30 * 86400


@dataclass(frozen=True)
class TaskSettings:
    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpus: int | None = None
    timeout_s: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class GpuSettings:
    resource: str = "nvidia.com/gpu"
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    shm_size: str = "16Gi"


@dataclass(frozen=True)
class Platform:
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
        _check_label_map(self.node_selector, "node_selector")
        _check_label_map(self.gpu.node_selector, "gpu.node_selector")
        _check_tolerations(self.tolerations)
        _check_tolerations(self.gpu.tolerations)
        _quantity(self.gpu.shm_size, "gpu.shm_size")
        counts = {"timeout_s": self.timeout_s, "retries": self.retries}
        for name, t in self.tasks.items():
            for k in ("cpu", "memory", "cpu_limit", "memory_limit"):
                if getattr(t, k) is not None:
                    _quantity(getattr(t, k), f"tasks.{name}.{k}")
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


PLATFORM = Platform.load(os.environ.get("SEEDBED_PLATFORM"))
#: component names cluster_settings saw (compile_all refuses platform ``tasks`` that match none)
SEEN: set[str] = set()


def cluster_settings(task: dsl.PipelineTask, cpu: str = "2", memory: str = "8G", *, gpus: int = 0,
                     timeout_s: int | None = None) -> dsl.PipelineTask:
    """Caching off, S3 Secret as env, resources, accelerator + /dev/shm, placement, deadline, retries.

    ``cpu``/``memory``/``gpus`` are the task's defaults, ``timeout_s`` None the platform's deadline;
    the platform file's ``tasks.<component>`` entry overrides any of them.
    """
    name = task.component_spec.name
    SEEN.add(name)
    over = {k: v for k, v in vars(PLATFORM.tasks.get(name, TaskSettings())).items() if v is not None}
    cpu, memory, gpus = over.get("cpu", cpu), over.get("memory", memory), over.get("gpus", gpus)
    timeout_s = over.get("timeout_s", PLATFORM.timeout_s if timeout_s is None else timeout_s)
    retries = over.get("retries", PLATFORM.retries)

    task.set_caching_options(False)
    task.set_cpu_request(cpu).set_memory_request(memory)
    if "cpu_limit" in over:
        task.set_cpu_limit(over["cpu_limit"])
    if "memory_limit" in over:
        task.set_memory_limit(over["memory_limit"])
    kubernetes.use_secret_as_env(task, secret_name=PLATFORM.s3_secret, secret_key_to_env={k: k for k in S3_SECRET_KEYS})
    # what a launcher puts in the TrainJob it creates (seedbed.launch.launch reads them)
    task.set_env_variable("SEEDBED_S3_SECRET", PLATFORM.s3_secret)
    task.set_env_variable("SEEDBED_GPU_RESOURCE", PLATFORM.gpu.resource)
    if gpus:
        task.set_accelerator_type(PLATFORM.gpu.resource).set_accelerator_limit(gpus)
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=PLATFORM.gpu.shm_size)
    selector, tolerations = ((PLATFORM.gpu.node_selector, PLATFORM.gpu.tolerations) if gpus
                             else (PLATFORM.node_selector, PLATFORM.tolerations))
    for key, value in selector.items():
        kubernetes.add_node_selector(task, key, str(value))
    for tol in tolerations:
        kubernetes.add_toleration(task, key=tol.get("key"), operator=tol.get("operator"), value=tol.get("value"),
                                  effect=tol.get("effect"), toleration_seconds=tol.get("tolerationSeconds"))
    if timeout_s:
        kubernetes.set_timeout(task, timeout_s)
    if retries:  # Argo's retry window runs from the first attempt (kubeflow/pipelines#14245): cover them all
        window = (retries + 1) * (timeout_s or MAX_TASK_S)
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration=f"{window}s")
    return task
