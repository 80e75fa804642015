"""The launch part of the training engine (seedbed.launch): TrainJob render/validate, the
create-and-watch loop, and local torchrun processes.

(a) Rendered TrainJobs round-trip through the kubeflow-trainer-api models with no field lost, for
    both runtimes; kubectl parses them (kustomize, client-side); secrets are only secretKeyRefs;
    bad specs fail with clear errors.
(b) The watch loop's decisions against a fake CustomObjectsApi driven through the real
    ``kubernetes.watch.Watch`` (fakes are allowed here: no cluster in tests).
(c) Real processes: torchrun on 127.0.0.1 with 2 simulated nodes running tests/dist_probe.py
    (gloo all-reduce), a failing node, a timeout, the rendered torch-distributed command under the
    PET_* env the runtime injects, and the rendered MPI command under a stand-in mpirun.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from seedbed.launch import launch, scalar_metrics
from seedbed.launch.local import (
    LocalRunFailed,
    LocalRunTimeout,
    free_port,
    run_torchrun_local,
    torchrun_command,
)
from seedbed.launch.trainjob import (
    SPEC_HASH_LABEL,
    LaunchError,
    LaunchSpec,
    TrainJobConflict,
    TrainJobFailed,
    TrainJobTimeout,
    default_name,
    entry_command,
    render_trainjob,
    spec_hash,
    submit_and_watch,
    trainjob_yaml,
    validate_trainjob,
)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
URI = "s3://seedbed-bucket/runs/r1/train.json"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def make_spec(**kw) -> LaunchSpec:
    base = dict(
        name="pretrain-small", namespace="ml-team", image="ghcr.io/seedbed/seedbed-train:0.1.0",
        config_uri=URI, nodes=2, procs_per_node=8, gpus_per_node=8, cpu_per_node="64",
        memory_per_node="512Gi", shm_size="64Gi", env={"NCCL_DEBUG": "WARN"},
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[GPU_TOLERATION], labels={"team": "pretrain"},
    )
    base.update(kw)
    return LaunchSpec(**base)


def render(**kw) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return render_trainjob(make_spec(**kw))


def pod_patches(m: dict) -> dict[str, dict]:
    (patch,) = m["spec"]["runtimePatches"]
    assert patch["manager"] == "seedbed.io/launch"
    jobs = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return {j["name"]: j["template"]["spec"]["template"] for j in jobs}


# ============================================================================ (a) render


@pytest.mark.parametrize("runtime,jobs", [("torch-distributed", ["node"]),
                                          ("deepspeed-distributed", ["launcher", "node"])])
def test_rendered_trainjob_round_trips_through_the_trainer_api_models(runtime, jobs):
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    m = render(runtime=runtime)
    back = TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(m)).to_dict()
    assert back == m  # nothing dropped, renamed or re-typed
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                       "name": runtime}
    t = m["spec"]["trainer"]
    assert (t["numNodes"], t["numProcPerNode"], t["image"]) == (2, 8, "ghcr.io/seedbed/seedbed-train:0.1.0")
    assert t["resourcesPerNode"] == {
        "limits": {"memory": "512Gi", "nvidia.com/gpu": "8"},
        "requests": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"},
    }
    patches = pod_patches(m)
    assert sorted(patches) == jobs  # every replicated job that runs training processes
    for pod in patches.values():
        spec = pod["spec"]
        assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}]
        assert spec["containers"] == [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert spec["tolerations"] == [GPU_TOLERATION]
        assert pod["metadata"]["labels"]["seedbed.io/trainjob"] == "pretrain-small"
        assert pod["metadata"]["labels"]["team"] == "pretrain"
    labels = m["metadata"]["labels"]
    assert labels[SPEC_HASH_LABEL] == spec_hash(m) and labels["team"] == "pretrain"
    assert m["metadata"]["annotations"]["seedbed.io/config-uri"] == URI


def test_commands_for_each_runtime():
    torch_cmd = render()["spec"]["trainer"]["command"]
    # nnodes / nproc / node rank / master come from the runtime's PET_* env, read by torchrun itself
    assert torch_cmd == ["torchrun", "-m", "seedbed.train.entry", "--config", URI]
    assert render(entry_args=["--resume", "auto"])["spec"]["trainer"]["command"][-2:] == ["--resume", "auto"]

    ds = render(runtime="deepspeed-distributed")["spec"]["trainer"]["command"]
    assert ds[:2] == ["bash", "-c"] and len(ds) == 3
    script = ds[2]
    assert "hostfile=/etc/mpi/hostfile" in script
    assert 'exec mpirun --hostfile "$hostfile" -np 16 ' in script  # 2 nodes x 8 slots
    assert '-x MASTER_ADDR="$master_addr" -x MASTER_PORT=29500' in script
    assert 'RANK="$OMPI_COMM_WORLD_RANK"' in script and "exec python -m seedbed.train.entry" in script
    assert f"seedbed-rank --config {URI}" in script
    # the S3 keys, IRSA's web identity and the plain env are forwarded to every rank by name, never
    # by value, each once
    assert ("for v in PATH NCCL_DEBUG AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL AWS_REGION "
            "AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_STS_REGIONAL_ENDPOINTS AWS_DEFAULT_REGION;") in script
    subprocess.run(["bash", "-n", "-c", script], check=True)  # valid shell
    # without the S3 Secret (IRSA only) the web identity is still forwarded
    keyless = render(runtime="deepspeed-distributed", s3_secret="")["spec"]["trainer"]["command"][2]
    assert ("for v in PATH NCCL_DEBUG AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_STS_REGIONAL_ENDPOINTS AWS_REGION "
            "AWS_DEFAULT_REGION;") in keyless


def test_deepspeed_multi_node_warns_about_the_node_image():
    with pytest.warns(UserWarning, match="node"):
        render_trainjob(make_spec(runtime="deepspeed-distributed"))
    # a custom runtime that says how it starts processes is accepted, without the warning
    m = render_trainjob(make_spec(runtime="seedbed-deepspeed", launcher="mpirun"))
    assert sorted(pod_patches(m)) == ["launcher", "node"]


@pytest.mark.parametrize("runtime", ["torch-distributed", "deepspeed-distributed"])
def test_runtime_kind_picks_the_namespaced_runtime(runtime):
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    m = render(runtime=runtime, runtime_kind="TrainingRuntime")
    assert m["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": runtime}
    assert TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(m)).to_dict() == m
    # the launcher follows from the name whichever kind it is; the kind changes what the job runs
    assert m["spec"]["trainer"]["command"] == render(runtime=runtime)["spec"]["trainer"]["command"]
    assert m["metadata"]["labels"][SPEC_HASH_LABEL] != render(runtime=runtime)["metadata"]["labels"][SPEC_HASH_LABEL]
    assert LaunchSpec.from_dict({**make_spec().to_dict(), "runtime_kind": "TrainingRuntime"}).runtime_kind == "TrainingRuntime"


def test_secrets_are_only_referenced_never_inline(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2-very-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    m = render(secret_env={"WANDB_API_KEY": "wandb/api-key"})
    text = trainjob_yaml(m)
    assert "hunter2-very-secret" not in text and "AKIAEXAMPLEKEY" not in text
    env = {e["name"]: e for e in m["spec"]["trainer"]["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION", "WANDB_API_KEY"):
        assert "value" not in env[key], key
        assert "secretKeyRef" in env[key]["valueFrom"], key
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "seedbed-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "wandb", "key": "api-key"}
    assert env["NCCL_DEBUG"] == {"name": "NCCL_DEBUG", "value": "WARN"}
    # no secret at all when asked
    names = {e["name"] for e in render(s3_secret="")["spec"]["trainer"]["env"]}
    assert names == {"NCCL_DEBUG"}
    for bad in ({"AWS_SECRET_ACCESS_KEY": "x"}, {"AWS_ACCESS_KEY_ID": "x"}, {"HF_TOKEN": "x"}, {"DB_PASSWORD": "x"}):
        with pytest.raises(LaunchError, match="looks like a credential.*Secret"):
            render(env=bad)


def test_rendered_yaml_parses_with_kubectl(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    m = render(runtime="deepspeed-distributed")
    (tmp_path / "trainjob.yaml").write_text(trainjob_yaml(m))
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - trainjob.yaml\n")
    # `kubectl create --dry-run=client` needs the CRD from a server; kustomize parses client-side
    res = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout) == m
    assert yaml.safe_load(trainjob_yaml(m)) == m


def test_validate_trainjob_refuses_lost_or_mistyped_fields():
    m = render()
    bad = copy.deepcopy(m)
    bad["spec"]["trainer"]["numProcsPerNode"] = 8  # misspelt: the API would silently drop it
    with pytest.raises(LaunchError, match=r"spec\.trainer\.numProcsPerNode: dropped"):
        validate_trainjob(bad)
    bad = copy.deepcopy(m)
    pod = pod_patches(bad)["node"]["spec"]
    pod["podTemplateOverrides"] = {}  # the pre-2.2 API
    with pytest.raises(LaunchError, match="podTemplateOverrides: dropped"):
        validate_trainjob(bad)
    bad = copy.deepcopy(m)
    bad["spec"]["trainer"]["numNodes"] = "2"
    with pytest.raises(LaunchError, match="does not fit"):
        validate_trainjob(bad)
    with pytest.raises(LaunchError, match="not a trainer.kubeflow.org/v1alpha1 TrainJob"):
        validate_trainjob({**m, "apiVersion": "kubeflow.org/v1"})


@pytest.mark.parametrize("change,message", [
    ({"nodes": 0}, "nodes: must be >= 1"),
    ({"nodes": "two"}, "nodes: expected an integer"),
    ({"name": "Pretrain_Small"}, "DNS-1035"),
    ({"name": "1-job"}, "DNS-1035"),
    ({"name": "a" * 41}, "at most 40"),
    ({"namespace": "ML"}, "namespace 'ML'"),
    ({"runtime": "tf-distributed"}, "not known.*launcher="),
    ({"launcher": "srun"}, "launcher 'srun'"),
    ({"runtime_kind": "trainingruntime"}, "runtime_kind 'trainingruntime': must be one of ClusterTrainingRuntime, TrainingRuntime"),
    ({"runtime_kind": "TrainingRuntime", "runtime": "Bad_Name"}, "must be the name of a TrainingRuntime"),
    ({"memory_per_node": "lots"}, "memory_per_node: 'lots' is not a Kubernetes quantity"),
    ({"cpu_per_node": "-2"}, "cpu_per_node: must be greater than zero"),
    ({"shm_size": "1Ti"}, "shm_size 1Ti exceeds memory_per_node 512Gi"),
    ({"procs_per_node": 9}, "exceeds gpus_per_node"),
    ({"tolerations": [{"key": "x", "operator": "Sometimes"}]}, "operator 'Sometimes'"),
    ({"tolerations": [{"key": "x", "toleration_seconds": 5}]}, "unknown field.*toleration_seconds"),
    ({"tolerations": "gpu"}, "expected a list"),
    ({"node_selector": {"bad key!": "x"}}, "node_selector: label key"),
    ({"env": {"RANK": "0"}}, "set by the training runtime"),
    ({"env": {"PET_NNODES": "3"}}, "set by the training runtime"),
    ({"env": {"1BAD": "x"}}, "not a valid environment variable name"),
    ({"secret_env": {"X": "no-key"}}, "secret-name/key"),
    ({"image": ""}, "image ''"),
    ({"entry_args": ["--config", "x"]}, "--config is set from config_uri"),
    ({"labels": {SPEC_HASH_LABEL: "x"}}, "set by seedbed"),
])
def test_bad_specs_fail_clearly(change, message):
    with pytest.raises(LaunchError, match=message):
        render(**change)


def test_from_dict():
    d = dict(name="x1", namespace="ns", image="img:1", config_uri=URI, nodes=2.0, procs_per_node="2")
    s = LaunchSpec.from_dict(d)  # kfp local mode hands ints over as floats
    assert (s.nodes, s.procs_per_node, s.runtime, s.s3_secret) == (2, 2, "torch-distributed", "seedbed-s3")
    assert LaunchSpec.from_dict(s.to_dict()) == s
    with pytest.raises(LaunchError, match=r"unknown field\(s\) \['gpus'\]"):
        LaunchSpec.from_dict({**d, "gpus": 1})
    with pytest.raises(LaunchError, match=r"missing required field\(s\) \['image'\]"):
        LaunchSpec.from_dict({k: v for k, v in d.items() if k != "image"})


def test_names_and_hashes_are_stable():
    n = default_name(URI)
    assert n == default_name(URI) and n != default_name(URI + "2")
    LaunchSpec(name=n, namespace="ns", image="i:1", config_uri=URI).validate()
    assert spec_hash(render()) == spec_hash(render())
    assert render()["metadata"]["labels"][SPEC_HASH_LABEL] != render(nodes=3)["metadata"]["labels"][SPEC_HASH_LABEL]


# ============================================================================ (b) watch loop


class Clock:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


class FakeResponse:
    """What ``list_namespaced_custom_object(watch=True, _preload_content=False)`` returns."""

    def __init__(self, items):
        self.items = items

    def stream(self, amt=None, decode_content=False):
        for item in self.items:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        pass

    def release_conn(self):
        pass


class FakeApi:
    """A CustomObjectsApi stand-in holding TrainJobs in memory. ``sessions``: one list per watch
    request, of ``(event_type, status_or_None)`` tuples (the stored object is updated and a new
    resourceVersion given), raw dict events, or exceptions (the connection drops there). An
    exhausted/empty session ends like a server-side watch timeout (the clock moves on)."""

    def __init__(self, clock: Clock, sessions=(), create_errors=()):
        self.clock = clock
        self.objects: dict[str, dict] = {}
        self.sessions = [list(s) for s in sessions]
        self.create_errors = list(create_errors)
        self.calls: list[tuple] = []
        self.rv = 0

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[obj["metadata"]["name"]] = obj
        return obj

    def set_status(self, name: str, status: dict | None) -> dict:
        obj = copy.deepcopy(self.objects[name])
        if status is not None:
            obj["status"] = status
        return self.put(obj)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kw):
        from kubernetes.client.exceptions import ApiException

        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        assert namespace == body["metadata"]["namespace"]
        self.calls.append(("create", body["metadata"]["name"]))
        if self.create_errors:
            raise self.create_errors.pop(0)
        if body["metadata"]["name"] in self.objects:
            raise ApiException(status=409, reason="Conflict")
        return copy.deepcopy(self.put(body))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        from kubernetes.client.exceptions import ApiException

        self.calls.append(("get", name))
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[name])

    def list_namespaced_custom_object(self, group, version, namespace, plural, **kw):
        assert kw["watch"] is True and kw["_preload_content"] is False
        name = kw["field_selector"].removeprefix("metadata.name=")
        assert name in self.objects
        self.calls.append(("watch", kw.get("resource_version")))
        items = []
        session = self.sessions.pop(0) if self.sessions else []
        for item in session:
            if callable(item):  # a change this watch never reports (it happened while we were away)
                item(self)
                continue
            if isinstance(item, BaseException):
                items.append(item)
                break
            if isinstance(item, dict):
                items.append(json.dumps(item).encode() + b"\n")
                continue
            etype, status = item
            obj = self.set_status(name, status)
            if etype == "DELETED":
                del self.objects[name]
            items.append(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
        if not items or not isinstance(items[-1], BaseException):
            self.clock.t += kw["timeout_seconds"]  # the server held the watch open that long
        return FakeResponse(items)


def cond(type_, status="True", reason="", message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


RUNNING = {"conditions": [cond("Created", reason="JobSetCreated", message="the JobSet was created")]}
COMPLETE = {"conditions": [cond("Created", reason="JobSetCreated"), cond("Complete", reason="JobSetCompleted",
                                                                          message="jobset completed")]}
FAILED = {"conditions": [cond("Created", reason="JobSetCreated"),
                         cond("Failed", reason="JobSetFailed", message="jobset failed: node-0 exited with 1")]}


def watch(api, clock, manifest=None, **kw):
    lines: list[str] = []
    manifest = manifest or render()
    kw.setdefault("timeout_s", 3600)
    result = submit_and_watch(manifest, api, log=lines.append, sleep=clock.sleep, clock=clock, **kw)
    return result, lines


def watch_rvs(api) -> list:
    return [c[1] for c in api.calls if c[0] == "watch"]


def test_watch_complete():
    clock = Clock()
    api = FakeApi(clock, sessions=[[("ADDED", RUNNING), ("MODIFIED", COMPLETE)]])
    result, lines = watch(api, clock)
    assert result["status"] == COMPLETE
    assert api.calls == [("create", "pretrain-small"), ("watch", "1")]
    assert any("created" in l for l in lines) and any("Complete=True (JobSetCompleted)" in l for l in lines)


def test_watch_failed_surfaces_reason_and_message():
    clock = Clock()
    api = FakeApi(clock, sessions=[[("MODIFIED", RUNNING), ("MODIFIED", FAILED)]])
    with pytest.raises(TrainJobFailed, match="JobSetFailed: jobset failed: node-0 exited with 1") as e:
        watch(api, clock)
    assert e.value.reason == "JobSetFailed"
    assert "kubectl -n ml-team get trainjob pretrain-small" in str(e.value)


def test_409_same_spec_is_adopted():
    clock = Clock()
    api = FakeApi(clock, sessions=[[("MODIFIED", COMPLETE)]])
    m = render()
    api.put(m)  # created by an earlier attempt of this task
    api.set_status("pretrain-small", RUNNING)
    result, lines = watch(api, clock, m)
    assert result["status"] == COMPLETE
    assert api.calls == [("create", "pretrain-small"), ("get", "pretrain-small"), ("watch", "2")]
    assert any("adopting" in l for l in lines)


def test_409_adopts_a_job_that_already_finished():
    clock = Clock()
    api = FakeApi(clock)
    m = render()
    api.put(m)
    api.set_status("pretrain-small", COMPLETE)
    result, _ = watch(api, clock, m)
    assert result["status"] == COMPLETE and watch_rvs(api) == []


def test_409_with_a_different_spec_is_refused():
    clock = Clock()
    api = FakeApi(clock)
    api.put(render(nodes=4))  # same name, another spec
    with pytest.raises(TrainJobConflict, match="already exists but was not created from this launch spec.*"
                                               "kubectl -n ml-team delete trainjob pretrain-small"):
        watch(api, clock, render())
    assert watch_rvs(api) == []


def test_stream_end_and_dropped_stream_reconnect():
    from urllib3.exceptions import ProtocolError

    clock = Clock()
    api = FakeApi(clock, sessions=[
        [("MODIFIED", RUNNING)],  # server ends the watch: reconnect from the last resourceVersion
        [("MODIFIED", RUNNING), ProtocolError("Connection broken: IncompleteRead")],  # dropped
        [("MODIFIED", COMPLETE)],
    ])
    result, lines = watch(api, clock)
    assert result["status"] == COMPLETE
    assert api.calls == [("create", "pretrain-small"), ("watch", "1"), ("watch", "2"),
                         ("get", "pretrain-small"), ("watch", "3")]
    assert len(clock.sleeps) == 1 and any("ProtocolError" in l for l in lines)


def test_410_gone_restarts_from_a_fresh_resource_version():
    clock = Clock()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version: 1 (4)"}}
    moved_on = [lambda api: api.set_status("pretrain-small", RUNNING)] * 3
    api = FakeApi(clock, sessions=[[*moved_on, gone], [("MODIFIED", COMPLETE)]])
    result, lines = watch(api, clock)
    assert result["status"] == COMPLETE
    # the stale watch from "1" expires; a GET gives the current object and resourceVersion "4"
    assert api.calls == [("create", "pretrain-small"), ("watch", "1"), ("get", "pretrain-small"), ("watch", "4")]
    assert any("410 Gone" in l for l in lines) and clock.sleeps == []


def test_410_gone_when_the_job_finished_meanwhile():
    clock = Clock()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    api = FakeApi(clock, sessions=[[lambda api: api.set_status("pretrain-small", FAILED), gone]])
    with pytest.raises(TrainJobFailed, match="JobSetFailed"):
        watch(api, clock)
    assert watch_rvs(api) == ["1"]


def test_transient_api_errors_are_retried_and_permanent_ones_are_not():
    from kubernetes.client.exceptions import ApiException

    clock = Clock()
    api = FakeApi(clock, create_errors=[ApiException(status=503, reason="Service Unavailable"),
                                        ConnectionResetError("reset by peer")],
                  sessions=[[("MODIFIED", COMPLETE)]])
    result, _ = watch(api, clock)
    assert result["status"] == COMPLETE and len(clock.sleeps) == 2 and clock.sleeps[1] > 0
    clock = Clock()
    api = FakeApi(clock, create_errors=[ApiException(status=403, reason="Forbidden")])
    with pytest.raises(LaunchError, match="forbidden.*rbac.yaml"):
        watch(api, clock)


def test_deleted_while_watching_is_a_failure():
    clock = Clock()
    api = FakeApi(clock, sessions=[[("MODIFIED", RUNNING), ("DELETED", None)]])
    with pytest.raises(TrainJobFailed, match="deleted while being watched"):
        watch(api, clock)


def test_overall_timeout_leaves_the_job_running_and_says_how_to_inspect_it():
    clock = Clock()
    api = FakeApi(clock, sessions=[[("MODIFIED", RUNNING)]])
    with pytest.raises(TrainJobTimeout) as e:
        watch(api, clock, timeout_s=1000, watch_timeout_s=300)
    msg = str(e.value)
    assert "did not finish within 1000s and was left running" in msg
    assert "kubectl -n ml-team delete trainjob pretrain-small" in msg and "logs -l" in msg
    assert watch_rvs(api) == ["1", "2", "2", "2"]  # 300 + 300 + 300 + 100 s of watching
    assert "pretrain-small" in api.objects  # not deleted


# ============================================================================ (c) real processes


def probe_env(**extra) -> dict:
    return {"PYTHONPATH": str(TESTS), **extra}


def write_config(tmp_path: Path, **cfg) -> tuple[str, Path]:
    out = tmp_path / "out"
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"out_uri": str(out), **cfg}))
    return str(path), out


def ranks(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_torchrun_command_line():
    cmd = torchrun_command(["--config", URI], nnodes=2, nproc_per_node=4, node_rank=1, master_port=29555)
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", "1",
                   "--nproc-per-node", "4", "--rdzv-backend", "static", "--master-addr", "127.0.0.1",
                   "--master-port", "29555", "--max-restarts", "0", "-m", "seedbed.train.entry", "--config", URI]
    with pytest.raises(ValueError, match="node_rank 2"):
        torchrun_command([], nnodes=2, node_rank=2)


def test_launch_local_two_nodes_all_reduce_and_summary(tmp_path):
    config_uri, out = write_config(tmp_path)
    record = tmp_path / "record.yaml"
    lines: list[str] = []
    result = launch(config_uri, "local",
                    {"nodes": 2, "procs_per_node": 1, "entry_module": "dist_probe",
                     "env": probe_env(SEEDBED_PROBE="local")},
                    record_path=record, timeout_s=120, log=lines.append, log_dir=tmp_path / "logs")
    got = ranks(out)
    assert [r["rank"] for r in got] == [0, 1]
    assert all(r["world_size"] == 2 and r["sum"] == 3.0 for r in got)  # 1 + 2 across two "nodes"
    assert all(r["local_rank"] == 0 and r["seen_env"]["SEEDBED_PROBE"] == "local" for r in got)
    assert result["out_uri"] == str(out)
    assert result["metrics"] == {"final_loss": 1.5, "tokens": 4096.0, "tokens_per_s": 1234.5,
                                 "world_size": 2.0, "allreduce_sum": 3.0}
    cmds = yaml.safe_load(record.read_text())["commands"]
    assert [c[c.index("--node-rank") + 1] for c in cmds] == ["0", "1"]
    assert all(c[c.index("--nnodes") + 1] == "2" and "--master-port" in c for c in cmds)
    assert any(l.startswith("[node 1] probe: rank 1/2 up") for l in lines)
    assert "probe: rank 0/2 up" in (tmp_path / "logs" / "node-0.log").read_text()


def test_local_failing_node_stops_the_others(tmp_path):
    config_uri, out = write_config(tmp_path, fail_rank=1)
    with pytest.raises(LocalRunFailed) as e:
        run_torchrun_local(["--config", config_uri], nnodes=2, nproc_per_node=1, env=probe_env(),
                           timeout_s=120, module="dist_probe", log=lambda s: None, grace_s=5)
    err = e.value
    assert err.node == 1 and err.exit_codes[1] == 1
    assert err.exit_codes[0] is not None and err.exit_codes[0] != 0  # stopped, not left blocking
    msg = str(err)
    assert "node 1 failed with exit code 1" in msg and "node 0:" in msg and "stopped by the launcher" in msg
    assert "rank 1 failing on purpose" in err.tail
    worker0 = int((out / "pid-0").read_text())
    deadline = time.monotonic() + 10
    while alive(worker0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker0), "node 0's worker survived"
    assert ranks(out) == []


def test_local_timeout_kills_everything(tmp_path):
    config_uri, out = write_config(tmp_path, hang_s=120)
    t0 = time.monotonic()
    with pytest.raises(LocalRunTimeout, match="did not finish within 4s"):
        run_torchrun_local(["--config", config_uri], nnodes=1, nproc_per_node=1, env=probe_env(),
                           timeout_s=4, module="dist_probe", log=lambda s: None, grace_s=3)
    assert time.monotonic() - t0 < 30
    pid_file = out / "pid-0"
    if pid_file.exists():  # the worker had started: it must be gone too
        worker = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker)


def test_rendered_torch_command_runs_under_the_runtime_pet_env(tmp_path):
    """The TrainJob command has no topology flags: torchrun must take them from PET_* (what the
    torch-distributed runtime sets in each node's container)."""
    config_uri, out = write_config(tmp_path)
    spec = make_spec(config_uri=config_uri, entry_module="dist_probe", gpus_per_node=0, procs_per_node=1)
    cmd = entry_command(spec)
    assert cmd[0] == "torchrun"
    argv = [sys.executable, "-m", "torch.distributed.run", *cmd[1:]]
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    procs = []
    for node in range(2):
        env = {**base, **probe_env(), "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(node),
               "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    got = ranks(out)
    assert [(r["rank"], r["world_size"], r["sum"]) for r in got] == [(0, 2, 3.0), (1, 2, 3.0)]


FAKE_MPIRUN = textwrap.dedent('''\
    #!{python}
    """Stand-in for OpenMPI's mpirun: starts -np ranks over the hostfile's slots, giving each only
    the -x variables (what remote ranks get) plus OMPI_COMM_WORLD_*; records its argv."""
    import json, os, subprocess, sys
    args = sys.argv[1:]
    hostfile, np_, fwd = None, None, {{}}
    while args and args[0].startswith("-"):
        a = args.pop(0)
        if a == "--hostfile": hostfile = args.pop(0)
        elif a == "-np": np_ = int(args.pop(0))
        elif a in ("--map-by", "--bind-to"): args.pop(0)
        elif a == "-x":
            name, eq, val = args.pop(0).partition("=")
            fwd[name] = val if eq else os.environ[name]
        else: sys.exit("fake mpirun: unknown option " + a)
    hosts = []
    for line in open(hostfile):
        if line.strip():
            host, slots = line.split()
            hosts += [(host, i) for i in range(int(slots.split("=")[1]))]
    assert np_ == len(hosts), (np_, hosts)
    json.dump({{"argv": sys.argv[1:], "forwarded": sorted(fwd)}}, open(os.environ["FAKE_MPIRUN_LOG"], "w"))
    per_host = {{h: sum(1 for x, _ in hosts if x == h) for h, _ in hosts}}
    procs = [subprocess.Popen(args, env={{**fwd, "OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": str(np_),
                                          "OMPI_COMM_WORLD_LOCAL_RANK": str(local),
                                          "OMPI_COMM_WORLD_LOCAL_SIZE": str(per_host[h])}})
             for r, (h, local) in enumerate(hosts)]
    sys.exit(max(p.wait() for p in procs))
''')


def test_rendered_mpi_command_runs_ranks_with_torch_env(tmp_path):
    """The deepspeed-distributed command: master from the hostfile, env forwarded with -x, rank
    variables mapped from OMPI_COMM_WORLD_* (real bash, stand-in mpirun, real gloo ranks)."""
    config_uri, out = write_config(tmp_path)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\nlocalhost slots=1\n")  # launcher-as-node + 1 node
    spec = make_spec(runtime="deepspeed-distributed", config_uri=config_uri, entry_module="dist_probe",
                     nodes=2, procs_per_node=1, gpus_per_node=0, mpi_hostfile=str(hostfile),
                     master_port=free_port(), env=probe_env(SEEDBED_PROBE="mpi"), entry_args=["--flag"])
    with pytest.warns(UserWarning):
        cmd = render_trainjob(spec)["spec"]["trainer"]["command"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mpirun").write_text(FAKE_MPIRUN.format(python=sys.executable))
    (bindir / "mpirun").chmod(0o755)
    env = {"PATH": f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin", "FAKE_MPIRUN_LOG": str(tmp_path / "mpirun.json"),
           "PYTHONPATH": str(TESTS), "SEEDBED_PROBE": "mpi",
           "AWS_SECRET_ACCESS_KEY": "from-secret", "AWS_ACCESS_KEY_ID": "id",  # as secretKeyRef sets them
           # as EKS's pod identity webhook sets them in a pod of an IRSA-annotated account
           "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/seedbed-example",
           "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
           "AWS_STS_REGIONAL_ENDPOINTS": "regional"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "mpirun: 2 ranks on 2 node(s)" in res.stdout and "master 127.0.0.1" in res.stdout
    got = ranks(out)
    assert [(r["rank"], r["world_size"], r["sum"], r["local_rank"]) for r in got] == [(0, 2, 3.0, 0), (1, 2, 3.0, 0)]
    assert all(r["master_addr"] == "127.0.0.1" and r["extra_args"] == ["--flag"] for r in got)
    assert all(r["seen_env"] == {"SEEDBED_PROBE": "mpi", "AWS_SECRET_ACCESS_KEY": "from-secret",
                                 "AWS_ENDPOINT_URL": None, "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/seedbed-example",
                                 "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}
               for r in got)
    rec = json.loads((tmp_path / "mpirun.json").read_text())
    # optional Secret keys that are absent are not forwarded (mpirun would choke on them)
    assert rec["forwarded"] == sorted(["MASTER_ADDR", "MASTER_PORT", "PATH", "PYTHONPATH", "SEEDBED_PROBE",
                                       "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ROLE_ARN",
                                       "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS"])
    assert rec["argv"][:4] == ["--hostfile", str(hostfile), "-np", "2"]


# ============================================================================ component wiring


def test_component_wires_the_library(monkeypatch, tmp_path):
    import seedbed.launch as L
    from components.launch_train import launch_training

    seen = {}

    def fake_launch(config_uri, mode, spec, record_path=None, timeout_s=None, **kw):
        seen.update(config_uri=config_uri, mode=mode, spec=spec, timeout_s=timeout_s)
        Path(record_path).write_text("kind: TrainJob\n")
        return {"out_uri": "s3://b/out", "metrics": {"final_loss": 2.5, "mfu": 0.41}, "summary": {}, "record": {}}

    monkeypatch.setattr(L, "launch", fake_launch)
    logged = {}
    art = SimpleNamespace(path=str(tmp_path / "tj.yaml"), metadata={})
    met = SimpleNamespace(log_metric=lambda k, v: logged.__setitem__(k, v))
    out = launch_training.python_func(
        config_uri=URI, trainjob=art, metrics=met, mode="cluster", name="", namespace="ns", image="img:1",
        runtime="deepspeed-distributed", nodes=2, procs_per_node=4, gpus_per_node=4, cpu_per_node="32",
        memory_per_node="256Gi", shm_size="32Gi", node_selector_json='{"pool": "gpu"}',
        tolerations_json=json.dumps([GPU_TOLERATION]), timeout_s=600,
    )
    assert out == "s3://b/out" and logged == {"final_loss": 2.5, "mfu": 0.41}
    assert seen["spec"]["node_selector"] == {"pool": "gpu"} and seen["spec"]["tolerations"] == [GPU_TOLERATION]
    assert (seen["mode"], seen["timeout_s"], seen["spec"]["nodes"]) == ("cluster", 600, 2)
    assert seen["spec"]["runtime_kind"] == "TrainingRuntime"  # the component's default: manifests/base's runtimes
    assert art.metadata == {"mode": "cluster", "out_uri": "s3://b/out"}


def test_spec_from_args_parses_the_json_arguments_and_names_bad_ones():
    from seedbed.launch import spec_from_args

    spec = spec_from_args(image="img:1", nodes=2, node_selector_json='{"pool": "gpu"}',
                          tolerations_json=json.dumps([GPU_TOLERATION]))
    assert spec == {"image": "img:1", "nodes": 2, "node_selector": {"pool": "gpu"}, "tolerations": [GPU_TOLERATION]}
    assert spec_from_args() == {"node_selector": {}, "tolerations": []}  # "" → none
    with pytest.raises(LaunchError, match="node_selector_json: not valid JSON"):
        spec_from_args(node_selector_json="{pool: gpu}")
    with pytest.raises(LaunchError, match="tolerations_json: not valid JSON"):
        spec_from_args(tolerations_json="[{]")


@pytest.mark.parametrize("kind", [None, "ClusterTrainingRuntime", "TrainingRuntime"])
def test_components_reference_the_runtime_kind_they_are_given(monkeypatch, tmp_path, kind):
    """launch_training and sweep_run turn runtime_kind into the TrainJob's runtimeRef.kind (real
    launch() and render; only the API call is faked); local mode takes the parameter and ignores it."""
    import seedbed.launch.local as local_mod
    import seedbed.launch.trainjob as tj
    import seedbed.mixture.stages as stages
    from components.launch_train import launch_training
    from components.sweep_run import sweep_run

    config_uri, out = write_config(tmp_path)
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"final_loss": 2.0}))
    created = []
    monkeypatch.setattr(tj, "submit_and_watch", lambda manifest, **kw: created.append(manifest))
    want = kind or "TrainingRuntime"
    given = {} if kind is None else {"runtime_kind": kind}
    art = SimpleNamespace(path=str(tmp_path / "tj.yaml"), metadata={})
    met = SimpleNamespace(log_metric=lambda k, v: None)
    assert launch_training.python_func(config_uri=config_uri, trainjob=art, metrics=met, namespace="ns", image="img:1",
                                       runtime="deepspeed-distributed", **given) == str(out)
    assert yaml.safe_load(Path(art.path).read_text())["spec"]["runtimeRef"] == created[-1]["spec"]["runtimeRef"]
    # sweep_run hands its spec to run_item, which passes it to launch() unchanged (seedbed.mixture.stages)
    monkeypatch.setattr(stages, "run_item", lambda item, mode, spec: launch(config_uri, mode, spec, log=print)["out_uri"])
    sweep_run.python_func(item="{}", mode="cluster", image="img:1", runtime="torch-distributed", runtime_kind=want,
                          nodes=1, procs_per_node=1, gpus_per_node=1, node_selector_json="{}", tolerations_json="[]")
    assert [m["spec"]["runtimeRef"] for m in created] == [
        {"apiGroup": "trainer.kubeflow.org", "kind": want, "name": "deepspeed-distributed"},
        {"apiGroup": "trainer.kubeflow.org", "kind": want, "name": "torch-distributed"}]
    # mode=local: torchrun in this process's pod; no runtime is involved
    ran = []
    monkeypatch.setattr(local_mod, "run_torchrun_local", lambda entry, **kw: ran.append(entry))
    art = SimpleNamespace(path=str(tmp_path / "local.yaml"), metadata={})
    assert launch_training.python_func(config_uri=config_uri, trainjob=art, metrics=met, mode="local", **given) == str(out)
    sweep_run.python_func(item="{}", mode="local", image="", runtime="torch-distributed", runtime_kind=want,
                          nodes=1, procs_per_node=1, gpus_per_node=0, node_selector_json="{}", tolerations_json="[]")
    assert len(ran) == 2 and len(created) == 2


def test_launch_cluster_mode_renders_records_and_watches(tmp_path):
    config_uri, out = write_config(tmp_path)
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"final_loss": 3.25, "tokens": 10, "ok": True, "nested": {"a": 1}}))
    clock = Clock()
    api = FakeApi(clock, sessions=[[("MODIFIED", COMPLETE)]])
    record = tmp_path / "trainjob.yaml"
    result = launch(config_uri, "cluster", {"namespace": "ns", "image": "img:1", "gpus_per_node": 1},
                    record_path=record, api=api, log=lambda s: None)
    m = yaml.safe_load(record.read_text())
    assert m["metadata"]["name"] == default_name(config_uri) and m["metadata"]["namespace"] == "ns"
    assert api.objects[m["metadata"]["name"]]["spec"] == m["spec"]
    assert result["metrics"] == {"final_loss": 3.25, "tokens": 10.0}
    with pytest.raises(LaunchError, match="has no 'out_uri'"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        launch(str(bad), "local", {})
    with pytest.raises(LaunchError, match="mode 'k8s'"):
        launch(config_uri, "k8s", {})
    assert scalar_metrics({"a": float("nan"), "b": 1}) == {"b": 1.0}


def test_cluster_launch_takes_the_platform_secret_and_gpu_resource_from_env(tmp_path, monkeypatch):
    """The compiled pipelines set SEEDBED_S3_SECRET / SEEDBED_GPU_RESOURCE from the platform file on
    every task; the TrainJob a launcher creates uses them (an explicit spec value still wins)."""
    config_uri, out = write_config(tmp_path)
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"final_loss": 3.0}))
    monkeypatch.setenv("SEEDBED_S3_SECRET", "other-s3")
    monkeypatch.setenv("SEEDBED_GPU_RESOURCE", "amd.com/gpu")
    for spec, secret, resource in (({}, "other-s3", "amd.com/gpu"), ({"s3_secret": "mine"}, "mine", "amd.com/gpu")):
        api = FakeApi(Clock(), sessions=[[("MODIFIED", COMPLETE)]])
        record = tmp_path / "trainjob.yaml"
        launch(config_uri, "cluster", {"namespace": "ns", "image": "img:1", "gpus_per_node": 2, **spec},
               record_path=record, api=api, log=lambda s: None)
        text = record.read_text()
        assert f"name: {secret}" in text and "seedbed-s3" not in text
        assert f"{resource}: '2'" in text or f"{resource}: 2" in text, text
