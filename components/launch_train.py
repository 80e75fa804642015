from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from components._images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def launch_training(
    config_uri: str,
    trainjob: Output[Artifact],
    metrics: Output[Metrics],
    mode: str = "cluster",
    name: str = "",
    namespace: str = "",
    image: str = "",
    runtime: str = "torch-distributed",
    runtime_kind: str = "TrainingRuntime",
    nodes: int = 1,
    procs_per_node: int = 1,
    gpus_per_node: int = 1,
    cpu_per_node: str = "",
    memory_per_node: str = "",
    shm_size: str = "16Gi",
    node_selector_json: str = "{}",
    tolerations_json: str = "[]",
    timeout_s: int = 0,
) -> str:
    """Run the training entrypoint for the config at ``config_uri`` and return its ``out_uri``.

    ``mode="cluster"``: a Kubeflow Trainer TrainJob (its manifest is the ``trainjob`` artifact),
    created and watched to Complete/Failed; an empty ``name`` is derived from ``config_uri`` (a
    retried task adopts the job it created), an empty ``namespace`` is this pod's.
    ``image``: the training image (the pipeline passes the CUDA image; required in cluster mode).
    ``runtime_kind``: "TrainingRuntime" (the runtime named ``runtime`` in the job's namespace, as
    manifests/base installs it: the seedbed-train image under the seedbed-trainer account) or
    "ClusterTrainingRuntime" (the Trainer's cluster-wide one).
    ``mode="local"``: torchrun processes in this pod (``runtime`` and ``runtime_kind`` unused).
    The run's summary.json numbers become ``metrics``. ``timeout_s`` 0: no limit of our own. An empty ``config_uri`` trains nothing and returns "" (an unused stage slot).
    """
    from seedbed.launch import launch, spec_from_args

    if not config_uri:  # an unused slot of a pipeline with a fixed number of stages (staged-growth)
        trainjob.metadata["skipped"] = True
        return ""

    spec = spec_from_args(
        name=name, namespace=namespace, image=image, runtime=runtime, runtime_kind=runtime_kind, nodes=nodes,
        procs_per_node=procs_per_node, gpus_per_node=gpus_per_node, cpu_per_node=cpu_per_node,
        memory_per_node=memory_per_node, shm_size=shm_size, node_selector_json=node_selector_json,
        tolerations_json=tolerations_json,
    )
    result = launch(config_uri, mode, spec, record_path=trainjob.path, timeout_s=timeout_s)
    trainjob.metadata["mode"] = mode
    trainjob.metadata["out_uri"] = result["out_uri"]
    for key, value in result["metrics"].items():
        metrics.log_metric(key, value)
    return result["out_uri"]
