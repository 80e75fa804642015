"""Settings every seedbed pipeline task gets on a cluster."""

import os

from kfp import dsl, kubernetes

#: Kubernetes Secret with the object-store settings, exposed to every step as env variables
#: (manifests/base/secret-s3.yaml). Ignored by the local runner, which uses the caller's env.
S3_SECRET = os.environ.get("SEEDBED_S3_SECRET", "seedbed-s3")
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def cluster_settings(task: dsl.PipelineTask, cpu: str = "2", memory: str = "8G") -> dsl.PipelineTask:
    task.set_caching_options(False)
    task.set_cpu_request(cpu).set_memory_request(memory)
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env={k: k for k in S3_SECRET_KEYS})
    return task
