"""Cluster settings in the compiled pipelines: the kubernetes platform document of every pipeline,
with the built-in defaults and with a platform file (`seedbed compile --platform`)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import run_cli

GPU_TASKS = {"embed", "score-and-label", "evaluate-model"}
LAUNCHERS = {"launch-training", "sweep-run"}
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"}
GPU_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
PLATFORM = {
    "s3_secret": "other-s3",
    "node_selector": {"pool": "cpu"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "seedbed", "effect": "NoSchedule"}],
    "timeout_s": 3600,
    "retries": 3,
    "gpu": {"node_selector": GPU_SELECTOR, "tolerations": [GPU_TOLERATION], "shm_size": "8Gi"},
    "tasks": {"embed": {"gpus": 2, "memory": "32G", "memory_limit": "48G"},
              "launch_training": {"gpus": 1, "timeout_s": 7200}},  # mode=local: train in the launcher's pod
}


def _compile(out, *args) -> dict:
    res = run_cli("compile", "--out", str(out), *args, timeout=600)
    assert res.returncode == 0, res.stderr
    return {p.stem: list(yaml.safe_load_all(p.read_text())) for p in sorted(out.glob("*.yaml"))}


def tasks(docs) -> list[dict]:
    """Every container task of a compiled pipeline, at any DAG level, with what configures it."""
    spec, platform = docs
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    out = []
    for comp in [spec["root"], *spec["components"].values()]:
        for name, t in comp.get("dag", {}).get("tasks", {}).items():
            label = spec["components"][t["componentRef"]["name"]].get("executorLabel")
            if label:
                out.append({"name": name, "kind": re.sub(r"-\d+$", "", label.removeprefix("exec-")), "task": t,
                            "k8s": execs[label], "resources": spec["deploymentSpec"]["executors"][label]["container"]
                            .get("resources", {})})
    return out


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # the built-in settings, whatever this shell exports
        for var in ("SEEDBED_PLATFORM", "SEEDBED_S3_SECRET"):
            mp.delenv(var, raising=False)
        return _compile(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    d = tmp_path_factory.mktemp("configured")
    (d / "platform.yaml").write_text(yaml.safe_dump(PLATFORM))
    return _compile(d / "out", "--platform", str(d / "platform.yaml"))


def test_default_settings_of_every_task(default):
    assert set(default) == {"betr_select", "train_lm", "staged_growth", "mixture_fit", "curate_and_grow"}
    kinds = set()
    for pipeline, docs in default.items():
        for t in tasks(docs):
            kinds.add(t["kind"])
            k8s, res, where = t["k8s"], t["resources"], f"{pipeline}/{t['name']}"
            assert t["task"]["cachingOptions"].get("enableCache") is not True, where
            (secret,) = k8s["secretAsEnv"]
            assert secret["secretName"] == "seedbed-s3" and not secret["optional"], where
            env = {e["name"]: e["value"] for e in docs[0]["deploymentSpec"]["executors"][
                t["task"]["componentRef"]["name"].replace("comp-", "exec-", 1)]["container"].get("env", [])}
            assert env == {"SEEDBED_S3_SECRET": "seedbed-s3", "SEEDBED_GPU_RESOURCE": "nvidia.com/gpu"}, where
            assert {k["secretKey"] for k in secret["keyToEnv"]} == S3_KEYS == {k["envVar"] for k in secret["keyToEnv"]}
            assert "nodeSelector" not in k8s and "tolerations" not in k8s, where
            assert res["resourceCpuRequest"] and res["resourceMemoryRequest"], where
            gpu = t["kind"] in GPU_TASKS
            assert (res.get("accelerator") == {"resourceType": "nvidia.com/gpu", "resourceCount": "1",
                                               "type": "nvidia.com/gpu", "count": "1"}) == gpu, where
            assert (k8s.get("emptyDirMounts") == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi",
                                                   "volumeName": "dshm"}]) == gpu, where
            # a deadline on every pod but the launchers, which watch training for as long as it takes
            deadline = None if t["kind"] in LAUNCHERS else 86400
            assert k8s.get("activeDeadlineSeconds") == (deadline and str(deadline)), where
            # every stage is idempotent on work_uri: all retried, in a window covering every attempt
            retry = t["task"]["retryPolicy"]
            assert retry["maxRetryCount"] == 2 and retry["backoffDuration"] == "30s", where
            assert int(retry["backoffMaxDuration"].rstrip("s")) >= 3 * (deadline or 30 * 86400), where
    assert GPU_TASKS | LAUNCHERS <= kinds
    for name in ("train_lm", "staged_growth", "mixture_fit", "curate_and_grow"):
        params = default[name][0]["root"]["inputDefinitions"]["parameters"]
        assert params["node_selector_json"]["defaultValue"] == "{}"
        assert params["tolerations_json"]["defaultValue"] == "[]"


def test_platform_file_places_cpu_and_gpu_tasks(configured):
    cpu_tol = PLATFORM["tolerations"]
    seen = set()
    for pipeline, docs in configured.items():
        for t in tasks(docs):
            k8s, res, kind, where = t["k8s"], t["resources"], t["kind"], f"{pipeline}/{t['name']}"
            seen.add(kind)
            assert k8s["secretAsEnv"][0]["secretName"] == "other-s3", where
            env = {e["name"]: e["value"] for e in docs[0]["deploymentSpec"]["executors"][
                t["task"]["componentRef"]["name"].replace("comp-", "exec-", 1)]["container"].get("env", [])}
            assert env["SEEDBED_S3_SECRET"] == "other-s3", where  # what the launchers put in the TrainJob
            assert t["task"]["retryPolicy"]["maxRetryCount"] == 3, where
            gpus = {"embed": 2, "launch-training": 1}.get(kind, 1 if kind in GPU_TASKS else 0)
            acc = res.get("accelerator", {})
            assert (acc.get("resourceType"), acc.get("resourceCount")) == (
                ("nvidia.com/gpu", str(gpus)) if gpus else (None, None)), where
            if gpus:  # GPU pool only, never the CPU pool's selector or taint
                assert k8s["nodeSelector"] == {"labels": GPU_SELECTOR} and k8s["tolerations"] == [GPU_TOLERATION], where
                assert k8s["emptyDirMounts"][0]["sizeLimit"] == "8Gi", where
            else:
                assert k8s["nodeSelector"] == {"labels": {"pool": "cpu"}} and k8s["tolerations"] == cpu_tol, where
                assert "emptyDirMounts" not in k8s, where
            deadline = {"launch-training": "7200", "sweep-run": None}.get(kind, "3600")
            assert k8s.get("activeDeadlineSeconds") == deadline, where
            if kind == "embed":
                assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"], res["resourceCpuRequest"]) == (
                    "32G", "48G", "4"), where
    assert {"embed", "launch-training", "sweep-run", "ingest-corpus"} <= seen
    # TrainJob nodes land on the GPU pool too: the launchers' node selector/tolerations defaults
    for name in ("train_lm", "staged_growth", "mixture_fit", "curate_and_grow"):
        params = configured[name][0]["root"]["inputDefinitions"]["parameters"]
        assert json.loads(params["node_selector_json"]["defaultValue"]) == GPU_SELECTOR
        assert json.loads(params["tolerations_json"]["defaultValue"]) == [GPU_TOLERATION]


def _root_parameter(spec: dict, comp: str, param: str) -> str | None:
    """The root (pipeline) parameter that input ``param`` of component ``comp`` comes from, through
    any nesting of sub-DAGs (ParallelFor bodies, ...); None if it is not a plain pass-through."""
    while comp != "root":
        parents = [(name, t) for name, c in spec["components"].items() for t in c.get("dag", {}).get("tasks", {}).values()
                   if t["componentRef"]["name"] == comp]
        parents += [("root", t) for t in spec["root"]["dag"]["tasks"].values() if t["componentRef"]["name"] == comp]
        if len(parents) != 1:
            return None
        comp, task = parents[0]
        param = task.get("inputs", {}).get("parameters", {}).get(param, {}).get("componentInputParameter")
        if param is None:
            return None
    return param


def test_launch_tasks_reference_the_namespaced_runtimes_by_default(default):
    """Every TrainJob launcher takes runtime_kind from the pipeline parameter, which defaults to the
    namespaced TrainingRuntime of manifests/base (the seedbed-train image as seedbed-trainer, IRSA in prod)."""
    launchers = {}
    for name in ("train_lm", "staged_growth", "mixture_fit", "curate_and_grow"):
        spec = default[name][0]
        params = spec["root"]["inputDefinitions"]["parameters"]
        assert params["runtime_kind"] == {"defaultValue": "TrainingRuntime", "isOptional": True,
                                          "parameterType": "STRING"}, name
        assert params["runtime"]["defaultValue"] == "torch-distributed", name
        for comp_name, comp in [("root", spec["root"]), *spec["components"].items()]:
            for task_name, t in comp.get("dag", {}).get("tasks", {}).items():
                kind = re.sub(r"-\d+$", "", t["componentRef"]["name"].removeprefix("comp-"))
                if kind not in LAUNCHERS:
                    continue
                src = t["inputs"]["parameters"]["runtime_kind"]["componentInputParameter"]
                assert _root_parameter(spec, comp_name, src) == "runtime_kind", f"{name}/{task_name}"
                launchers.setdefault(name, set()).add(kind)
    assert launchers == {"train_lm": {"launch-training"}, "staged_growth": {"launch-training"},
                         "mixture_fit": {"sweep-run"}, "curate_and_grow": {"launch-training", "sweep-run"}}
    comp = default["train_lm"][0]["components"]["comp-launch-training"]["inputDefinitions"]["parameters"]
    assert comp["runtime_kind"]["defaultValue"] == "TrainingRuntime"


@pytest.mark.parametrize("text, message", [
    ("nodes: {}", "platform: unknown field(s) ['nodes']"),
    ("gpu: {count: 2}", "gpu: unknown field(s) ['count']"),
    ("tasks: {embed: {gpu: 1}}", "tasks.embed: unknown field(s) ['gpu']"),
    ("retries: -1", "retries: expected an integer >= 0, got -1"),
    ("tasks: {embed: {timeout_s: '1h'}}", "tasks.embed.timeout_s: expected an integer >= 0"),
    ("tasks: {embed: {memory: lots}}", "tasks.embed.memory: 'lots' is not a Kubernetes quantity"),
    ("tolerations: [{key: a, operator: Maybe}]", "operator 'Maybe' must be one of"),
    ("node_selector: {'bad key!': x}", "node_selector: label key 'bad key!'"),
    ("gpu: {shm_size: lots}", "gpu.shm_size: 'lots' is not a Kubernetes quantity"),
    ("tasks: [embed]", "tasks: expected a mapping"),
    ("[1, 2]", "platform: expected a JSON object / mapping"),
    ("a: [", "platform file"),
])
def test_bad_platform_files_are_refused_by_name(tmp_path, text, message):
    from seedbed.platform import Platform

    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        Platform.load(str(tmp_path / "p.yaml"))


def test_compile_exits_2_on_a_bad_platform_file(tmp_path):
    (tmp_path / "p.yaml").write_text("tasks: {embedd: {gpus: 2}}\n")
    res = run_cli("compile", "--out", str(tmp_path / "out"), "--platform", str(tmp_path / "p.yaml"))
    assert res.returncode == 2, res.stderr
    assert "tasks ['embedd'] name no component" in res.stderr and "'embed'" in res.stderr
    res = run_cli("compile", "--out", str(tmp_path / "out"), "--platform", str(tmp_path / "absent.yaml"))
    assert res.returncode == 2 and "does not exist" in res.stderr
