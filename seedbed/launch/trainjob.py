"""Kubeflow Trainer v2 ``TrainJob``: render, validate, create and watch (issue #3, launch part).

The training entrypoint ``python -m seedbed.train.entry --config <uri>`` runs in the pods of one
``trainer.kubeflow.org/v1alpha1`` ``TrainJob`` that references a ``ClusterTrainingRuntime`` (the
Trainer's own, ``LaunchSpec``'s default) or, with ``runtime_kind="TrainingRuntime"`` (what the
training pipelines pass by default), the namespaced runtime of the same name that
``manifests/base/training-runtimes.yaml`` installs with the seedbed-train image and the
seedbed-trainer account:

* ``torch-distributed``: one pod per node; the runtime's Torch plugin sets ``PET_NNODES``,
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` in the
  trainer container, and ``torchrun`` reads every ``PET_<OPTION>`` variable as the default of its
  ``--<option>`` flag (``torch.distributed.argparse_util.env``). So the container command is just
  ``torchrun -m seedbed.train.entry --config <uri>``: no rendezvous flags, no SSH.
* ``deepspeed-distributed``: OpenMPI. The ``launcher`` pod (``runLauncherAsNode``: it is also
  training node 0) gets the hostfile at ``/etc/mpi/hostfile`` (one ``<host> slots=<procs>`` line
  per node) and runs ``mpirun``; the ``node`` pods run sshd. The rendered command takes the first
  hostfile host as ``MASTER_ADDR`` (mpirun's by-slot mapping puts rank 0 there), forwards it and
  the job's environment to every rank with ``-x`` (mpirun does not forward environment by
  itself), and each rank exports ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` from
  ``OMPI_COMM_WORLD_*`` before ``exec python -m seedbed.train.entry``. The forwarded names
  include IRSA's (``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE``, ... : ``IRSA_ENV``), each
  only where the launcher pod has it set, so remote ranks reach S3 with the web identity too. With those set,
  ``torch.distributed`` env:// and ``deepspeed.init_distributed`` both work (DeepSpeed then skips
  its mpi4py discovery). Caveat: Kubeflow Trainer before v2.4 applies the TrainJob's image,
  env and resources only to the launcher job; the ``node`` job keeps the runtime's image
  (kubeflow/trainer#2825, changed by #4301 in v2.4). For more than one node on such a version,
  use a runtime whose ``node`` template already runs the seedbed image with its GPUs
  (``LaunchSpec(runtime=<name>, launcher="mpirun")``). The ranks need no env on the node pods:
  mpirun forwards it.

Pod settings the ``trainer`` API has no field for (node selector, tolerations, the memory-backed
``/dev/shm``, pod labels) go in ``spec.runtimePatches`` (Trainer >= 2.2; it replaced
``podTemplateOverrides``), one entry owned by the manager ``seedbed.io/launch``, applied to every
replicated job that runs training processes.

Credentials never appear in the manifest: the S3 Secret's keys become ``env`` entries with
``valueFrom.secretKeyRef``; ``LaunchSpec.env`` refuses names that look like credentials.

:func:`submit_and_watch` creates the object through ``CustomObjectsApi`` (409 Conflict: adopt the
existing one if its ``seedbed.io/spec-hash`` label matches, else a clear error), then watches that
single object until its ``Complete`` or ``Failed`` condition, reconnecting when the stream ends
or drops, restarting from a fresh ``resourceVersion`` on 410 Gone, with backoff on transient
errors, under one overall timeout. The API objects are parameters, so tests pass fakes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import re
import shlex
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from seedbed.fields import check_fields

__all__ = [
    "GROUP",
    "VERSION",
    "PLURAL",
    "KIND",
    "API_VERSION",
    "RUNTIMES",
    "RUNTIME_KINDS",
    "S3_SECRET_KEYS",
    "IRSA_ENV",
    "SPEC_HASH_LABEL",
    "LaunchError",
    "TrainJobFailed",
    "TrainJobTimeout",
    "TrainJobConflict",
    "LaunchSpec",
    "default_name",
    "current_namespace",
    "entry_command",
    "render_trainjob",
    "validate_trainjob",
    "round_trip_problems",
    "trainjob_yaml",
    "spec_hash",
    "job_state",
    "load_kube_config",
    "submit_and_watch",
    "quantity",
    "check_label_map",
    "check_tolerations",
]

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"

#: known runtime names (ClusterTrainingRuntimes of Kubeflow Trainer, TrainingRuntimes of
#: manifests/base) -> how the trainer container starts the entrypoint
RUNTIMES = {"torch-distributed": "torchrun", "deepspeed-distributed": "mpirun"}
#: what ``runtimeRef.kind`` may name: the cluster-wide runtime or the one in the TrainJob's namespace
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
#: which replicated jobs of each launcher kind run training processes (get the pod patches)
_PATCHED_JOBS = {"torchrun": ("node",), "mpirun": ("launcher", "node")}
#: keys of the S3 Secret (manifests/base/secret-s3.yaml) -> optional?
S3_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": False,
    "AWS_SECRET_ACCESS_KEY": False,
    "AWS_ENDPOINT_URL": True,  # absent on AWS proper
    "AWS_REGION": True,
}
#: what EKS's pod identity webhook sets in pods whose ServiceAccount carries an
#: ``eks.amazonaws.com/role-arn`` annotation (IRSA; the token file is a projected volume it mounts
#: in every such pod, the mpirun ``node`` pods of the namespaced runtimes included): mpirun
#: forwards them to the remote ranks, whose ssh sessions start without the pod's environment
IRSA_ENV = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_REGION",
            "AWS_DEFAULT_REGION")
ENTRY_MODULE = "seedbed.train.entry"
MPI_HOSTFILE = "/etc/mpi/hostfile"
PATCH_MANAGER = "seedbed.io/launch"
SPEC_HASH_LABEL = "seedbed.io/spec-hash"
NAME_LABEL = "seedbed.io/trainjob"
CONFIG_ANNOTATION = "seedbed.io/config-uri"
BASE_LABELS = {"app.kubernetes.io/part-of": "seedbed", "app.kubernetes.io/managed-by": "seedbed-launch"}
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

# Longest TrainJob name: JobSet names pods/hostnames <name>-<replicatedJob>-<jobIdx>-<podIdx>
# (replicated job "launcher" is 8 characters), which must stay a 63-character DNS label.
MAX_NAME_LEN = 40
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREDENTIAL_ENV = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY|ACCESS_KEY|AUTH)", re.IGNORECASE
)
# set by the runtime or by the rendered launcher command: a user value would silently fight them
_RESERVED_ENV = re.compile(
    r"^(PET_.*|OMPI_.*|PMIX_.*|PRTE_.*|RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|GROUP_RANK|"
    r"NODE_RANK|MASTER_ADDR|MASTER_PORT|TORCHELASTIC_.*)$"
)
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = {"Exists", "Equal"}
_TOLERATION_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


class LaunchError(ValueError):
    """A launch spec or manifest is invalid, or the cluster cannot be reached; the message says why."""


class TrainJobFailed(RuntimeError):
    """The TrainJob reached its ``Failed`` condition (or was deleted while watched)."""

    def __init__(self, message: str, *, reason: str = "", status: dict | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status or {}


class TrainJobTimeout(TimeoutError):
    """The overall timeout passed; the TrainJob was left running (see the message)."""


class TrainJobConflict(LaunchError):
    """A TrainJob of that name exists and was not created from the same spec."""


# ----------------------------------------------------------------------------- the spec


def quantity(value, what: str) -> str:
    """``value`` as a positive Kubernetes quantity string, or a :class:`LaunchError` naming ``what``."""
    from kubernetes.utils import parse_quantity

    if isinstance(value, bool) or value is None or value == "":
        raise LaunchError(f"{what}: expected a Kubernetes quantity such as '8', '500m' or '64Gi', got {value!r}")
    text = str(value).strip()
    try:
        q = parse_quantity(text)
    except (ValueError, TypeError) as e:
        raise LaunchError(
            f"{what}: {value!r} is not a Kubernetes quantity (examples: '8', '500m', '64Gi', '1.5T'): {e}"
        ) from None
    if q <= 0:
        raise LaunchError(f"{what}: must be greater than zero, got {value!r}")
    return text


def _quantity_value(text: str):
    from kubernetes.utils import parse_quantity

    return parse_quantity(text)


def check_label_map(labels: dict, what: str, *, values_required: bool = False) -> dict[str, str]:
    """``labels`` (a node selector, pod labels) checked as Kubernetes label keys and values."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise LaunchError(f"{what}: expected a mapping of label keys to values, got {type(labels).__name__}")
    out = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not k:
            raise LaunchError(f"{what}: label key {k!r} must be a non-empty string")
        prefix, _, name = k.rpartition("/")
        if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
            raise LaunchError(f"{what}: label key {k!r} has an invalid prefix {prefix!r} (a DNS subdomain)")
        if not name or len(name) > 63 or not _LABEL_NAME.match(name):
            raise LaunchError(
                f"{what}: label key {k!r}: the name part must be 1-63 characters of [A-Za-z0-9-_.], "
                "starting and ending with an alphanumeric character"
            )
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise LaunchError(f"{what}: value of {k!r} must be a string, got {v!r}")
        v = str(v)
        if len(v) > 63 or not _LABEL_NAME.match(v) or (values_required and not v):
            raise LaunchError(
                f"{what}: value {v!r} of {k!r} must be at most 63 characters of [A-Za-z0-9-_.], "
                "starting and ending with an alphanumeric character"
            )
        out[k] = v
    return out


def check_tolerations(tols) -> list[dict]:
    """``tols`` checked as a list of Kubernetes tolerations."""
    if tols is None:
        return []
    if not isinstance(tols, list):
        raise LaunchError(f"tolerations: expected a list of toleration objects, got {type(tols).__name__}")
    out = []
    for i, t in enumerate(tols):
        where = f"tolerations[{i}]"
        if not isinstance(t, dict):
            raise LaunchError(f"{where}: expected an object like {{'key': 'nvidia.com/gpu', 'operator': 'Exists', "
                              f"'effect': 'NoSchedule'}}, got {t!r}")
        unknown = set(t) - _TOLERATION_KEYS
        if unknown:
            raise LaunchError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_TOLERATION_KEYS)}")
        op = t.get("operator", "Equal")
        if op not in _TOLERATION_OPERATORS:
            raise LaunchError(f"{where}: operator {op!r} must be one of {sorted(_TOLERATION_OPERATORS)}")
        if op == "Exists" and t.get("value"):
            raise LaunchError(f"{where}: operator Exists takes no value (got {t['value']!r})")
        if not t.get("key") and op != "Exists":
            raise LaunchError(f"{where}: an empty key needs operator Exists (tolerate everything)")
        eff = t.get("effect", "")
        if eff not in _TOLERATION_EFFECTS:
            raise LaunchError(f"{where}: effect {eff!r} must be one of {sorted(_TOLERATION_EFFECTS - {''})}")
        if "tolerationSeconds" in t:
            ts = t["tolerationSeconds"]
            if isinstance(ts, bool) or not isinstance(ts, int):
                raise LaunchError(f"{where}: tolerationSeconds must be an integer, got {ts!r}")
            if eff != "NoExecute":
                raise LaunchError(f"{where}: tolerationSeconds only applies to effect NoExecute")
        for k in ("key", "value"):
            if k in t and not isinstance(t[k], str):
                raise LaunchError(f"{where}: {k} must be a string, got {t[k]!r}")
        out.append({k: t[k] for k in ("key", "operator", "value", "effect", "tolerationSeconds") if k in t})
    return out


def _positive_int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise LaunchError(f"{what}: expected an integer >= {minimum}, got {value!r}")
    if isinstance(value, float) and value.is_integer():  # kfp local mode turns list ints into floats
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise LaunchError(f"{what}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise LaunchError(f"{what}: must be >= {minimum}, got {value}")
    return value


@dataclass
class LaunchSpec:
    """Everything that decides the TrainJob. ``validate()`` (called by ``from_dict`` and
    ``render_trainjob``) normalises the fields and raises :class:`LaunchError` with a clear message."""

    name: str
    namespace: str
    image: str
    config_uri: str
    runtime: str = "torch-distributed"
    #: "ClusterTrainingRuntime" (cluster-wide) or "TrainingRuntime" (in ``namespace``)
    runtime_kind: str = "ClusterTrainingRuntime"
    nodes: int = 1
    procs_per_node: int = 1
    gpus_per_node: int = 0
    cpu_per_node: str | None = None
    memory_per_node: str | None = None
    #: size of the memory-backed emptyDir mounted at /dev/shm (counts against the pod's memory)
    shm_size: str = "16Gi"
    #: plain, non-secret environment variables for every training process
    env: dict[str, str] = field(default_factory=dict)
    #: Secret whose S3 keys (S3_SECRET_KEYS) become env via secretKeyRef; "" for none
    s3_secret: str = "seedbed-s3"
    #: more secret env: {"WANDB_API_KEY": "secret-name/key"}
    secret_env: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    gpu_resource: str = "nvidia.com/gpu"
    #: extra arguments for the entrypoint, after ``--config <uri>``
    entry_args: list[str] = field(default_factory=list)
    entry_module: str = ENTRY_MODULE
    #: "" = from the runtime (RUNTIMES); "torchrun" or "mpirun" for a custom runtime name
    launcher: str = ""
    #: rendezvous port of the MPI form (torchrun gets PET_MASTER_PORT from the runtime)
    master_port: int = 29500
    #: where the MPI runtime mounts the hostfile (the Trainer's OpenMPI plugin: /etc/mpi/hostfile)
    mpi_hostfile: str = MPI_HOSTFILE
    #: spec.activeDeadlineSeconds: the Trainer fails the job after this long (None: no limit)
    active_deadline_s: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "LaunchSpec":
        check_fields(cls, d, "launch spec", LaunchError)
        return cls(**d).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def launcher_kind(self) -> str:
        return self.launcher or RUNTIMES.get(self.runtime, "")

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    def validate(self) -> "LaunchSpec":
        """Check and normalise every field in place; returns self."""
        if not isinstance(self.name, str) or not _DNS1035.match(self.name) or len(self.name) > MAX_NAME_LEN:
            raise LaunchError(
                f"name {self.name!r}: a TrainJob name must be a DNS-1035 label of at most {MAX_NAME_LEN} "
                "characters (lowercase letters, digits and '-', starting with a letter, ending with a letter "
                "or digit): the pods and headless Service derived from it must stay valid DNS names"
            )
        if not isinstance(self.namespace, str) or not _DNS1123_LABEL.match(self.namespace) or len(self.namespace) > 63:
            raise LaunchError(
                f"namespace {self.namespace!r}: must be a DNS-1123 label (lowercase letters, digits and '-', "
                "at most 63 characters)"
            )
        if not isinstance(self.image, str) or not self.image.strip() or any(c.isspace() for c in self.image):
            raise LaunchError(f"image {self.image!r}: expected a container image reference such as "
                              "'ghcr.io/seedbed/seedbed-train:0.1.0'")
        if not isinstance(self.config_uri, str) or not self.config_uri.strip():
            raise LaunchError("config_uri: the URI of the training config JSON is required")
        if self.launcher and self.launcher not in _PATCHED_JOBS:
            raise LaunchError(f"launcher {self.launcher!r}: must be 'torchrun' or 'mpirun' (or empty: from the runtime)")
        if self.runtime_kind not in RUNTIME_KINDS:
            raise LaunchError(f"runtime_kind {self.runtime_kind!r}: must be one of {', '.join(RUNTIME_KINDS)}")
        if not isinstance(self.runtime, str) or not _DNS1123_SUBDOMAIN.match(self.runtime or "-"):
            raise LaunchError(f"runtime {self.runtime!r}: must be the name of a {self.runtime_kind}")
        if self.runtime not in RUNTIMES and not self.launcher:
            raise LaunchError(
                f"runtime {self.runtime!r} is not known: use one of {sorted(RUNTIMES)}, or name how a custom "
                "runtime starts processes with launcher='torchrun' (PET_* env, like torch-distributed) or "
                "launcher='mpirun' (OpenMPI hostfile, like deepspeed-distributed)"
            )
        self.nodes = _positive_int(self.nodes, "nodes")
        self.procs_per_node = _positive_int(self.procs_per_node, "procs_per_node")
        self.gpus_per_node = _positive_int(self.gpus_per_node, "gpus_per_node", minimum=0)
        self.master_port = _positive_int(self.master_port, "master_port")
        if self.master_port > 65535:
            raise LaunchError(f"master_port: {self.master_port} is not a TCP port")
        if self.gpus_per_node and self.procs_per_node > self.gpus_per_node:
            raise LaunchError(
                f"procs_per_node ({self.procs_per_node}) exceeds gpus_per_node ({self.gpus_per_node}): "
                "each training process drives one GPU"
            )
        if self.active_deadline_s is not None:
            self.active_deadline_s = _positive_int(self.active_deadline_s, "active_deadline_s")
        if self.cpu_per_node not in (None, ""):
            self.cpu_per_node = quantity(self.cpu_per_node, "cpu_per_node")
        else:
            self.cpu_per_node = None
        if self.memory_per_node not in (None, ""):
            self.memory_per_node = quantity(self.memory_per_node, "memory_per_node")
        else:
            self.memory_per_node = None
        self.shm_size = quantity(self.shm_size, "shm_size")
        if self.memory_per_node and _quantity_value(self.shm_size) > _quantity_value(self.memory_per_node):
            raise LaunchError(
                f"shm_size {self.shm_size} exceeds memory_per_node {self.memory_per_node}: pages in the "
                "memory-backed /dev/shm count against the pod's memory limit"
            )
        if not isinstance(self.gpu_resource, str) or "/" not in self.gpu_resource:
            raise LaunchError(f"gpu_resource {self.gpu_resource!r}: expected an extended resource name "
                              "such as 'nvidia.com/gpu' or 'amd.com/gpu'")
        if self.s3_secret is None:
            self.s3_secret = ""
        if self.s3_secret and not _DNS1123_SUBDOMAIN.match(self.s3_secret):
            raise LaunchError(f"s3_secret {self.s3_secret!r}: not a valid Secret name")
        self.env = self._check_env(self.env)
        self.secret_env = self._check_secret_env(self.secret_env)
        clash = set(self.env) & set(self.secret_env)
        if self.s3_secret:
            clash |= set(self.env) & set(S3_SECRET_KEYS)
        if clash:
            raise LaunchError(f"env: {sorted(clash)} also come from a Secret; set each variable once")
        self.node_selector = check_label_map(self.node_selector, "node_selector")
        self.tolerations = check_tolerations(self.tolerations)
        self.labels = check_label_map(self.labels, "labels")
        reserved = sorted(k for k in self.labels if k == SPEC_HASH_LABEL or k == NAME_LABEL)
        if reserved:
            raise LaunchError(f"labels: {reserved} are set by seedbed itself")
        if self.entry_args is None:
            self.entry_args = []
        if not isinstance(self.entry_args, (list, tuple)) or not all(isinstance(a, str) for a in self.entry_args):
            raise LaunchError(f"entry_args: expected a list of strings, got {self.entry_args!r}")
        self.entry_args = list(self.entry_args)
        if "--config" in self.entry_args:
            raise LaunchError("entry_args: --config is set from config_uri; do not repeat it")
        if not isinstance(self.mpi_hostfile, str) or not self.mpi_hostfile.startswith("/"):
            raise LaunchError(f"mpi_hostfile {self.mpi_hostfile!r}: expected an absolute path")
        if not re.match(r"^[A-Za-z_][\w.]*$", self.entry_module or ""):
            raise LaunchError(f"entry_module {self.entry_module!r}: expected a dotted Python module name")
        return self

    @staticmethod
    def _check_env(env) -> dict[str, str]:
        if env is None:
            return {}
        if not isinstance(env, dict):
            raise LaunchError(f"env: expected a mapping of variable names to values, got {type(env).__name__}")
        out = {}
        for k, v in env.items():
            if not isinstance(k, str) or not _ENV_NAME.match(k):
                raise LaunchError(f"env: {k!r} is not a valid environment variable name")
            if k in S3_SECRET_KEYS or k == "AWS_SESSION_TOKEN" or _CREDENTIAL_ENV.search(k):
                raise LaunchError(
                    f"env: {k} looks like a credential. Credentials never go inline into a TrainJob (anyone "
                    "who can read trainjobs would see them): keep them in a Secret and reference it, "
                    "s3_secret for the S3 keys or secret_env={'NAME': 'secret-name/key'} for others"
                )
            if _RESERVED_ENV.match(k):
                raise LaunchError(f"env: {k} is set by the training runtime/launcher; do not set it")
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise LaunchError(f"env: value of {k} must be a string or a number, got {v!r}")
            out[k] = str(v)
        return out

    @staticmethod
    def _check_secret_env(secret_env) -> dict[str, str]:
        if secret_env is None:
            return {}
        if not isinstance(secret_env, dict):
            raise LaunchError("secret_env: expected a mapping {'ENV_NAME': 'secret-name/key'}")
        out = {}
        for k, ref in secret_env.items():
            if not isinstance(k, str) or not _ENV_NAME.match(k):
                raise LaunchError(f"secret_env: {k!r} is not a valid environment variable name")
            if _RESERVED_ENV.match(k):
                raise LaunchError(f"secret_env: {k} is set by the training runtime/launcher; do not set it")
            sec, _, key = str(ref).partition("/")
            if not sec or not key or not _DNS1123_SUBDOMAIN.match(sec) or not re.match(r"^[-._a-zA-Z0-9]+$", key):
                raise LaunchError(f"secret_env: {k}: expected 'secret-name/key', got {ref!r}")
            out[k] = f"{sec}/{key}"
        return out


def default_name(config_uri: str, prefix: str = "seedbed-train") -> str:
    """A stable TrainJob name for a config: a retried launch adopts the job it created before."""
    digest = hashlib.sha256(str(config_uri).encode()).hexdigest()[:10]
    return f"{prefix[: MAX_NAME_LEN - 11]}-{digest}"


def current_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (service account mount), else the kubeconfig context's, else ``default``."""
    p = Path(SA_NAMESPACE_FILE)
    if p.is_file():
        ns = p.read_text().strip()
        if ns:
            return ns
    try:
        from kubernetes import config

        _, ctx = config.list_kube_config_contexts()
        ns = (ctx or {}).get("context", {}).get("namespace")
        if ns:
            return ns
    except Exception:  # no kubeconfig: fall back
        pass
    return default


# ----------------------------------------------------------------------------- render


def entry_command(spec: LaunchSpec) -> list[str]:
    """The trainer container's command (argv) for the spec's launcher."""
    entry = ["--config", spec.config_uri, *spec.entry_args]
    if spec.launcher_kind == "torchrun":
        # nnodes / nproc-per-node / node-rank / master addr+port: PET_* env from the runtime
        return ["torchrun", "-m", spec.entry_module, *entry]
    # OpenMPI launcher (runs on the launcher pod, which is also node 0)
    # by name, each once: the job's env, its Secret keys and IRSA's web identity (which boto3 in a
    # remote rank needs to reach S3 when the pods have no static keys)
    forward = list(dict.fromkeys(["PATH", *spec.env, *spec.secret_env,
                                  *(S3_SECRET_KEYS if spec.s3_secret else ()), *IRSA_ENV]))
    rank_cmd = (
        'export RANK="$OMPI_COMM_WORLD_RANK" WORLD_SIZE="$OMPI_COMM_WORLD_SIZE" '
        'LOCAL_RANK="$OMPI_COMM_WORLD_LOCAL_RANK" LOCAL_WORLD_SIZE="$OMPI_COMM_WORLD_LOCAL_SIZE"; '
        f'exec python -m {spec.entry_module} "$@"'
    )
    script = "\n".join([
        "set -euo pipefail",
        f"hostfile={shlex.quote(spec.mpi_hostfile)}",
        'master_addr="$(awk \'NF && $1 !~ /^#/ {print $1; exit}\' "$hostfile")"',
        'if [ -z "$master_addr" ]; then echo "no host in $hostfile" >&2; exit 1; fi',
        "fwd=()",
        # forward only what is set: an optional Secret key may be absent
        f"for v in {' '.join(forward)}; do",
        '  if [ -n "${!v+x}" ]; then fwd+=(-x "$v"); fi',
        "done",
        f'echo "mpirun: {spec.world_size} ranks on {spec.nodes} node(s) from $hostfile, master $master_addr"',
        f'exec mpirun --hostfile "$hostfile" -np {spec.world_size} --map-by slot --bind-to none \\',
        f'  -x MASTER_ADDR="$master_addr" -x MASTER_PORT={spec.master_port} "${{fwd[@]}}" \\',
        f"  bash -c {shlex.quote(rank_cmd)} seedbed-rank {' '.join(shlex.quote(a) for a in entry)}",
    ])
    return ["bash", "-c", script]


def _env_list(spec: LaunchSpec) -> list[dict]:
    env = [{"name": k, "value": v} for k, v in spec.env.items()]
    if spec.s3_secret:
        for key, optional in S3_SECRET_KEYS.items():
            ref = {"name": spec.s3_secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    for k, ref in spec.secret_env.items():
        sec, key = ref.split("/", 1)
        env.append({"name": k, "valueFrom": {"secretKeyRef": {"name": sec, "key": key}}})
    return env


def _resources(spec: LaunchSpec) -> dict | None:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.cpu_per_node:
        requests["cpu"] = spec.cpu_per_node
    if spec.memory_per_node:
        requests["memory"] = spec.memory_per_node
        limits["memory"] = spec.memory_per_node
    if spec.gpus_per_node:
        requests[spec.gpu_resource] = str(spec.gpus_per_node)
        limits[spec.gpu_resource] = str(spec.gpus_per_node)
    out = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out or None


def spec_hash(manifest: dict) -> str:
    """A short digest of what the TrainJob runs (spec, name, namespace), for adopt-or-refuse on 409."""
    m = manifest.get("metadata", {})
    doc = {"name": m.get("name"), "namespace": m.get("namespace"), "spec": manifest.get("spec")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def render_trainjob(spec: LaunchSpec) -> dict:
    """The ``TrainJob`` manifest (a plain dict) for a spec, validated by :func:`validate_trainjob`."""
    spec = copy.deepcopy(spec).validate()
    kind = spec.launcher_kind
    if kind == "mpirun" and spec.runtime == "deepspeed-distributed" and spec.nodes > 1:
        warnings.warn(
            "deepspeed-distributed with nodes > 1: Kubeflow Trainer before v2.4 applies the TrainJob's "
            "image, env and resourcesPerNode to the launcher job only, so the 'node' pods run the runtime's "
            "own image (kubeflow/trainer#2825; v2.4 sets the image on them too, #4301). Check the node pods' "
            "image and GPUs, or use a custom runtime (launcher='mpirun') whose node template runs the "
            "seedbed image with the GPUs it needs",
            stacklevel=2,
        )
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": entry_command(spec),
        "env": _env_list(spec),
        "numNodes": spec.nodes,
        "numProcPerNode": spec.procs_per_node,
    }
    res = _resources(spec)
    if res:
        trainer["resourcesPerNode"] = res
    pod_labels = {**BASE_LABELS, **spec.labels, NAME_LABEL: spec.name}
    pod_spec: dict[str, Any] = {
        "containers": [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(spec.tolerations)
    replicated = [
        {"name": job, "template": {"spec": {"template": {"metadata": {"labels": dict(pod_labels)},
                                                          "spec": copy.deepcopy(pod_spec)}}}}
        for job in _PATCHED_JOBS[kind]
    ]
    job_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": spec.runtime_kind, "name": spec.runtime},
        "trainer": trainer,
        "runtimePatches": [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": replicated}}},
        }],
    }
    if spec.active_deadline_s:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_s
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {**BASE_LABELS, **spec.labels},
            "annotations": {CONFIG_ANNOTATION: spec.config_uri},
        },
        "spec": job_spec,
    }
    manifest["metadata"]["labels"][SPEC_HASH_LABEL] = spec_hash(manifest)
    return validate_trainjob(manifest)


def _diff(a, b, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values (a: ours, b: after round-trip)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in b:
                out.append(f"{p}: dropped (unknown to the API model)")
            elif k not in a:
                out.append(f"{p}: added ({b[k]!r})")
            else:
                out += _diff(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items became {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if a != b or type(a) is not type(b):
        return [f"{path}: {a!r} became {b!r}"]
    return []


def round_trip_problems(obj: dict, model, where: str = "") -> list[str]:
    """Where ``obj`` does not survive a round trip through a kubeflow-trainer-api ``model`` (its
    ``from_dict``/``to_dict``): rejected, or a field dropped (unknown or misspelled), added or
    changed; each problem starts with ``where``. Also checks TrainingRuntimes (tests/test_manifests.py)."""
    from pydantic import ValidationError

    try:
        back = model.from_dict(copy.deepcopy(obj)).to_dict()
    except (ValidationError, ValueError, TypeError) as e:
        return [f"{where or 'the object'}: does not fit {model.__name__}: {e}"]
    return _diff(obj, back, where)


def validate_trainjob(manifest: dict) -> dict:
    """Round-trip ``manifest`` through the kubeflow-trainer-api models; raise :class:`LaunchError`
    if a field is rejected, dropped (unknown or misspelled) or changed. Returns the manifest."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise LaunchError(f"not a {API_VERSION} {KIND}: apiVersion={manifest.get('apiVersion')!r} "
                          f"kind={manifest.get('kind')!r}")
    problems = round_trip_problems(manifest, TrainerV1alpha1TrainJob)
    if problems:
        raise LaunchError(f"the TrainJob does not fit the {API_VERSION} API (kubeflow-trainer-api models):\n  "
                          + "\n  ".join(problems))
    return manifest


def trainjob_yaml(manifest: dict) -> str:
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=120)


# ----------------------------------------------------------------------------- cluster access


def load_kube_config() -> str:
    """Configure the kubernetes client: in-cluster service account, else kubeconfig.

    Returns ``"incluster"`` or ``"kubeconfig"``; raises :class:`LaunchError` if neither works."""
    from kubernetes import config

    try:
        config.load_incluster_config()
        return "incluster"
    except config.ConfigException as e:
        incluster_err = e
    try:
        config.load_kube_config()
        return "kubeconfig"
    except (config.ConfigException, FileNotFoundError, OSError) as e:
        raise LaunchError(
            "cannot reach Kubernetes: not running in a pod with a service account "
            f"({incluster_err}) and no usable kubeconfig ({e}); set KUBECONFIG or run inside the cluster"
        ) from None


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _conditions(obj: dict) -> list[dict]:
    return list(((obj.get("status") or {}).get("conditions")) or [])


def job_state(obj: dict) -> tuple[str, dict | None]:
    """``("Complete"|"Failed"|"Running", condition)`` from a TrainJob's status conditions."""
    conds = {c.get("type"): c for c in _conditions(obj) if str(c.get("status")) == "True"}
    for t in ("Failed", "Complete"):
        if t in conds:
            return t, conds[t]
    return "Running", None


def _is_transient(exc: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return exc.status in (0, None, 408, 429, 500, 502, 503, 504)
    try:
        import urllib3.exceptions as u3

        if isinstance(exc, (u3.HTTPError,)):
            return True
    except ImportError:  # pragma: no cover
        pass
    import http.client

    return isinstance(exc, (ConnectionError, TimeoutError, OSError, http.client.HTTPException))


def _inspect_hint(name: str, ns: str) -> str:
    return (f"inspect: kubectl -n {ns} get trainjob {name} -o yaml; "
            f"kubectl -n {ns} logs -l jobset.sigs.k8s.io/jobset-name={name} --tail=100 --prefix; "
            f"delete: kubectl -n {ns} delete trainjob {name}")


def _pod_log_tail(core_api, name: str, ns: str, lines: int = 40) -> str:
    """Best effort: the last log lines of the TrainJob's pods (rbac: pods, pods/log get/list)."""
    if core_api is None:
        return ""
    try:
        pods = core_api.list_namespaced_pod(ns, label_selector=f"jobset.sigs.k8s.io/jobset-name={name}")
        out = []
        for pod in list(pods.items)[:4]:
            pname = pod.metadata.name
            try:
                text = core_api.read_namespaced_pod_log(pname, ns, container="node", tail_lines=lines)
            except Exception as e:  # noqa: BLE001 - diagnostics only
                text = f"(no log: {e})"
            out.append(f"--- {pname} ---\n{str(text).rstrip()}")
        return "\n".join(out)
    except Exception:  # noqa: BLE001 - diagnostics only
        return ""


def submit_and_watch(
    manifest: dict,
    api=None,
    *,
    timeout_s: float = 7 * 24 * 3600,
    watch_timeout_s: int = 300,
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    request_timeout_s: float = 60.0,
    core_api=None,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Create the TrainJob (or adopt the same one) and wait for it to finish.

    Returns the final object (dict) when its ``Complete`` condition is True. Raises
    :class:`TrainJobFailed` on ``Failed`` (reason and message surfaced) or deletion,
    :class:`TrainJobConflict` if a different TrainJob of that name exists,
    :class:`TrainJobTimeout` after ``timeout_s`` (the job is left running) and :class:`LaunchError`
    for errors that retrying cannot fix (403, invalid manifest, CRD not installed).

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (default: one built after
    :func:`load_kube_config`); anything with ``create_namespaced_custom_object``,
    ``get_namespaced_custom_object`` and ``list_namespaced_custom_object`` (watch=True streaming)
    works. Each watch asks the server to end after ``watch_timeout_s``; the loop then reconnects
    from the last resourceVersion.
    """
    from kubernetes import watch as k8s_watch
    from kubernetes.client.exceptions import ApiException

    validate_trainjob(manifest)
    if api is None:
        from kubernetes import client

        load_kube_config()
        api = client.CustomObjectsApi()
        if core_api is None:
            core_api = client.CoreV1Api()
    name = manifest["metadata"]["name"]
    ns = manifest["metadata"]["namespace"]
    ours = (manifest["metadata"].get("labels") or {}).get(SPEC_HASH_LABEL) or spec_hash(manifest)
    deadline = clock() + timeout_s
    where = f"TrainJob {ns}/{name}"
    errors = 0
    last_error: BaseException | None = None

    def fatal_api_error(e: ApiException, action: str) -> LaunchError:
        body = (e.body or "")[:500] if isinstance(e.body, str) else str(e.body)[:500]
        if e.status == 403:
            return LaunchError(f"{where}: {action} forbidden (403): the service account needs the Role in "
                               f"manifests/base/rbac.yaml (trainjobs create/get/list/watch/delete). {body}")
        if e.status == 404 and action == "create":
            return LaunchError(f"{where}: the TrainJob API ({API_VERSION}, {PLURAL}) is not installed in "
                               f"this cluster, or namespace {ns} does not exist (404). {body}")
        if e.status in (400, 422):
            return LaunchError(f"{where}: the API server rejected the TrainJob ({e.status} {e.reason}): {body}")
        return LaunchError(f"{where}: {action} failed ({e.status} {e.reason}): {body}")

    def backoff(e: BaseException) -> None:
        nonlocal errors, last_error
        errors += 1
        last_error = e
        delay = min(max_backoff_s, backoff_s * 2 ** min(errors - 1, 16)) * (0.5 + random.random() / 2)
        delay = max(0.0, min(delay, deadline - clock()))
        first = (str(e).strip().splitlines() or [""])[0][:200]
        log(f"{where}: API error ({type(e).__name__}: {first}); retry {errors} in {delay:.1f}s")
        sleep(delay)

    def timed_out() -> TrainJobTimeout:
        extra = f"; last API error: {last_error}" if last_error else ""
        return TrainJobTimeout(
            f"{where} did not finish within {timeout_s:g}s and was left running{extra}. "
            + _inspect_hint(name, ns)
        )

    def get() -> dict:
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _request_timeout=request_timeout_s)

    # --- create or adopt
    obj = None
    while obj is None:
        if clock() >= deadline:
            raise timed_out()
        try:
            obj = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, copy.deepcopy(manifest),
                                                      _request_timeout=request_timeout_s)
            log(f"{where}: created (runtime {manifest['spec']['runtimeRef']['name']}, "
                f"{manifest['spec']['trainer'].get('numNodes')} node(s))")
        except ApiException as e:
            if e.status == 409:
                try:
                    existing = get()
                except ApiException as ge:
                    if ge.status == 404:  # deleted in between: create again
                        continue
                    if _is_transient(ge):
                        backoff(ge)
                        continue
                    raise fatal_api_error(ge, "get") from None
                theirs = (_meta(existing).get("labels") or {}).get(SPEC_HASH_LABEL)
                if theirs != ours:
                    raise TrainJobConflict(
                        f"{where} already exists but was not created from this launch spec "
                        f"(label {SPEC_HASH_LABEL}: {theirs!r}, expected {ours!r}). Delete it "
                        f"(kubectl -n {ns} delete trainjob {name}) or launch under another name."
                    ) from None
                if _meta(existing).get("deletionTimestamp"):
                    raise TrainJobConflict(f"{where} exists and is being deleted; launch again once it is gone")
                log(f"{where}: already exists with the same spec ({ours}): adopting it")
                obj = existing
            elif _is_transient(e):
                backoff(e)
            else:
                raise fatal_api_error(e, "create") from None
        except Exception as e:  # noqa: BLE001 - connection-level errors are retried
            if not _is_transient(e):
                raise
            backoff(e)

    # --- watch until a terminal condition
    seen: set[tuple] = set()

    def check(o: dict) -> dict | None:
        for c in _conditions(o):
            key = (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
            if key not in seen:
                seen.add(key)
                log(f"{where}: condition {c.get('type')}={c.get('status')}"
                    + (f" ({c.get('reason')})" if c.get("reason") else "")
                    + (f": {c.get('message')}" if c.get("message") else ""))
        state, cond = job_state(o)
        if state == "Complete":
            return o
        if state == "Failed":
            reason = (cond or {}).get("reason") or "Failed"
            msg = (cond or {}).get("message") or ""
            tail = _pod_log_tail(core_api, name, ns)
            raise TrainJobFailed(
                f"{where} failed: {reason}" + (f": {msg}" if msg else "") + ". " + _inspect_hint(name, ns)
                + (f"\nlast pod log lines:\n{tail}" if tail else ""),
                reason=reason, status=o.get("status") or {},
            )
        return None

    done = check(obj)
    if done is not None:
        return done
    rv = _meta(obj).get("resourceVersion")
    need_get = False
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise timed_out()
        try:
            if need_get:
                try:
                    obj = get()
                except ApiException as e:
                    if e.status == 404:
                        raise TrainJobFailed(f"{where} was deleted while being watched", reason="Deleted") from None
                    raise
                done = check(obj)
                if done is not None:
                    return done
                rv = _meta(obj).get("resourceVersion")
                need_get = False
            w = k8s_watch.Watch()
            kwargs = dict(field_selector=f"metadata.name={name}",
                          timeout_seconds=max(1, int(min(watch_timeout_s, math.ceil(remaining)))),
                          _request_timeout=(request_timeout_s, watch_timeout_s + request_timeout_s))
            if rv:
                kwargs["resource_version"] = rv
            for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, **kwargs):
                etype = event.get("type")
                o = event.get("raw_object") or event.get("object") or {}
                if etype == "BOOKMARK":
                    rv = _meta(o).get("resourceVersion") or rv
                    continue
                if _meta(o).get("name") != name:
                    continue
                rv = _meta(o).get("resourceVersion") or rv
                if etype == "DELETED":
                    raise TrainJobFailed(f"{where} was deleted while being watched", reason="Deleted")
                errors = 0
                done = check(o)
                if done is not None:
                    w.stop()
                    return done
                if clock() >= deadline:
                    w.stop()
                    break
            # the server ended the watch (timeout_seconds) or the stream closed: reconnect from rv
        except ApiException as e:
            if e.status == 410:  # our resourceVersion is too old: fresh state, fresh watch
                log(f"{where}: watch expired (410 Gone); restarting from the current state")
                need_get = True
                rv = None
                continue
            if _is_transient(e):
                need_get = True
                backoff(e)
                continue
            raise fatal_api_error(e, "watch") from None
        except (TrainJobFailed, LaunchError, TrainJobTimeout):
            raise
        except Exception as e:  # noqa: BLE001 - dropped connections etc.
            if not _is_transient(e):
                raise
            need_get = True
            backoff(e)
