"""Settings every seedbed pipeline task gets on a cluster, from a compile-time platform file.

The platform file (its keys: :mod:`seedbed.platform`, which loads and checks it;
docs/running-on-kubeflow.md) is read when the pipelines are imported, since pod placement is
part of the compiled YAML (its kubernetes platform document): ``seedbed compile --platform
platform.yaml`` (or ``SEEDBED_PLATFORM=platform.yaml``). :func:`cluster_settings` applies it to
each task.

Every task may be retried: each stage is idempotent on ``work_uri`` (docs/stage-contracts.md), a
retried launcher adopts the TrainJob it created. The GPU node selector and tolerations are also
the default ``node_selector_json`` / ``tolerations_json`` of the training pipelines, so TrainJob
nodes land on the same GPU pool. Caching is off on every task (SPEC §6).
"""

from __future__ import annotations

import os

from kfp import dsl, kubernetes

from seedbed.platform import Platform, TaskSettings

S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
#: how long a task without a deadline (a launcher watching training) is assumed to run, for its retry window
MAX_TASK_S = 30 * 86400


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
