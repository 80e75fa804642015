"""Static checks of manifests/ (kustomize): what a Kubeflow namespace needs to run seedbed.

Each overlay (and the base) is rendered with `kubectl kustomize`; then
- every built-in object validates against the Kubernetes OpenAPI schema of K8S_VERSION with
  kubernetes-validate in strict mode (unknown fields, missing required fields, wrong types);
  every custom resource (Kubeflow Trainer's TrainingRuntime) round-trips through the
  kubeflow-trainer-api models without a field dropped, renamed or re-typed; any other kind fails;
- everything lands in one namespace, the Namespace object's, and nothing is cluster-scoped;
- the kfp-launcher ConfigMap's `providers` block has the layout the KFP v2 launcher parses
  (backend/src/v2/config/s3.go); with a secretRef, the Secret and keys it names are rendered;
  with fromEnv (prod), the service accounts carry an IRSA role and the Secret no keys;
- every Secret/ConfigMap key the compiled pipelines (pipelines.registry()) attach to their
  tasks exists, and the Secret's AWS_ENDPOINT_URL / AWS_REGION (what seedbed's own S3 client
  reads) describe the same store as the launcher config;
- the Role grants exactly what runs need (TrainJobs create/get/list/watch/delete, pods and
  logs get/list, the launcher's ConfigMap and Secret by name, Argo task results) and no more;
- the TrainingRuntimes run the seedbed-train image as its non-root user under the
  seedbed-trainer account, and TrainJobs rendered for them by seedbed.launch refer to them;
- the quota limits GPUs (dev below prod) and the LimitRange lets unannotated pods in;
- no credential that looks real is committed.
The checks are functions returning a list of problems; the tests at the bottom feed them broken
copies to show that each one fails when it should.
"""

from __future__ import annotations

import base64
import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.utils import parse_quantity

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").glob("*") if (p / "kustomization.yaml").is_file())

#: the Kubernetes version whose schemas (bundled with kubernetes-validate) the objects must fit
K8S_VERSION = "1.33"
NAMESPACE = "seedbed"
#: the only values a committed Secret may hold in a credential key: base placeholders, the
#: public defaults of a KFP install's dev store, and nothing at all (IRSA)
ALLOWED_SECRET_VALUES = {"REPLACE_ME", "minio", "minio123", ""}
PLACEHOLDER = "REPLACE_ME"

PART_OF = ("app.kubernetes.io/part-of", "seedbed")
LAUNCHER_CM = "kfp-launcher"
S3_SECRET = "seedbed-s3"
RUNNER = "seedbed-pipeline-runner"
TRAINER_SA = "seedbed-trainer"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
GPU_QUOTA = "requests.nvidia.com/gpu"
TRAINER_API = "trainer.kubeflow.org/v1alpha1"

BUILTIN_KINDS = {
    ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "ServiceAccount"),
    ("v1", "ResourceQuota"), ("v1", "LimitRange"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
}
#: custom resources -> their kubeflow-trainer-api model
CUSTOM_KINDS = {(TRAINER_API, "TrainingRuntime"): "TrainerV1alpha1TrainingRuntime"}
CLUSTER_SCOPED = {"Namespace"}

#: (apiGroup, resource) -> the verbs the Role may grant; resourceNames where it must name them
ALLOWED_RULES = {
    ("trainer.kubeflow.org", "trainjobs"): ({"create", "get", "list", "watch", "delete"}, None),
    ("", "pods"): ({"get", "list"}, None),
    ("", "pods/log"): ({"get", "list"}, None),
    ("", "configmaps"): ({"get"}, {LAUNCHER_CM}),
    ("", "secrets"): ({"get"}, {S3_SECRET}),
    ("argoproj.io", "workflowtaskresults"): ({"create", "patch"}, None),
}
TRAINJOB_VERBS = ALLOWED_RULES[("trainer.kubeflow.org", "trainjobs")][0]

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: `kubectl kustomize` renders the manifests"
)

# ----------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=None)
def _render_text(path: str) -> str:
    proc = subprocess.run([KUBECTL, "kustomize", path], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return proc.stdout


def render(path: Path) -> list[dict]:
    """The objects `kubectl kustomize PATH` renders (fresh copies, safe to mutate)."""
    return [d for d in yaml.safe_load_all(_render_text(str(path))) if d is not None]


def overlay(name: str) -> list[dict]:
    return render(MANIFESTS / "overlays" / name)


def find(objs: list[dict], kind: str, name: str) -> dict | None:
    hits = [o for o in objs if o.get("kind") == kind and o.get("metadata", {}).get("name") == name]
    assert len(hits) <= 1, f"{len(hits)} {kind}s named {name}"
    return hits[0] if hits else None


def of_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


# ----------------------------------------------------------------------------- schemas


def custom_problems(obj: dict, where: str) -> list[str]:
    """A custom resource round-trips through its kubeflow-trainer-api model unchanged (the check
    seedbed.launch applies to the TrainJobs it renders)."""
    import kubeflow_trainer_api.models as models

    from seedbed.launch.trainjob import round_trip_problems

    return round_trip_problems(obj, getattr(models, CUSTOM_KINDS[(obj.get("apiVersion"), obj.get("kind"))]), where)


def object_problems(obj: dict) -> list[str]:
    """Everything wrong with OBJ as an object of a kind these manifests may contain."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    where = f"{key[1]}/{obj.get('metadata', {}).get('name')}"
    if not obj.get("metadata", {}).get("name"):
        return [f"{where}: metadata.name is missing"]
    if key in CUSTOM_KINDS:
        return custom_problems(obj, where)
    if key not in BUILTIN_KINDS:
        return [f"{where}: unexpected apiVersion/kind {key} (known: {sorted(BUILTIN_KINDS | set(CUSTOM_KINDS))})"]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"]
    problems = []
    if key == ("v1", "Secret"):  # the schema says `format: byte`, which JSON Schema does not enforce
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except (ValueError, TypeError):
                problems.append(f"{where}: data.{k} is not valid base64")
    return problems


def namespace_problems(objs: list[dict]) -> list[str]:
    """One Namespace, and every other object in it; nothing else cluster-scoped."""
    nss = of_kind(objs, "Namespace")
    if len(nss) != 1:
        return [f"expected one Namespace, found {[n['metadata']['name'] for n in nss]}"]
    ns = nss[0]["metadata"]["name"]
    return [f"{o['kind']}/{o['metadata']['name']}: namespace {o['metadata'].get('namespace')!r}, want {ns!r}"
            for o in objs if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != ns]



# ----------------------------------------------------------------------------- kfp-launcher

_STR = {"type": "string", "minLength": 1}
_SECRET_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "accessKeyKey", "secretKeyKey"],
    "properties": {"secretName": _STR, "accessKeyKey": _STR, "secretKeyKey": _STR},
}
_CREDENTIALS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"fromEnv": {"type": "boolean"}, "secretRef": _SECRET_REF},
    # fromEnv false (the default) means the launcher reads the keys from secretRef
    "if": {"not": {"properties": {"fromEnv": {"const": True}}, "required": ["fromEnv"]}},
    "then": {"required": ["secretRef"]},
}
_CONNECTION = {
    "endpoint": _STR,
    "region": {"type": "string"},
    "disableSSL": {"type": "boolean"},
    "forcePathStyle": {"type": "boolean"},
    "maxRetries": {"type": "integer", "minimum": 0},
    "credentials": _CREDENTIALS,
}
#: the `providers` layout the KFP v2 launcher unmarshals (config.BucketProviders / S3ProviderConfig);
#: the launcher itself ignores unknown keys, which is how a typo silently falls back to defaults
PROVIDERS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["s3"],
    "properties": {
        "s3": {
            "type": "object",
            "additionalProperties": False,
            "required": ["default"],
            "properties": {
                "default": {
                    "type": "object",
                    "additionalProperties": False,
                    # region: the AWS SDK needs one; forcePathStyle/disableSSL: explicit, not defaults
                    "required": ["endpoint", "region", "disableSSL", "forcePathStyle", "credentials"],
                    "properties": _CONNECTION,
                },
                "overrides": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["bucketName", "credentials"],
                        "properties": {**_CONNECTION, "bucketName": _STR, "keyPrefix": {"type": "string"}},
                    },
                },
            },
        },
        "minio": {"type": "object"},
        "gs": {"type": "object"},
    },
}

_AWS_GLOBAL = re.compile(r"^(https://)?s3\.amazonaws\.com")


def launcher_problems(cm: dict | None) -> list[str]:
    """The kfp-launcher ConfigMap as the KFP v2 launcher and seedbed need it."""
    if cm is None:
        return [f"no ConfigMap {LAUNCHER_CM} rendered"]
    data = cm.get("data") or {}
    problems = []
    extra = set(data) - {"defaultPipelineRoot", "providers"}
    if extra:
        problems.append(f"{LAUNCHER_CM}: keys the launcher does not read: {sorted(extra)}")
    root = data.get("defaultPipelineRoot", "")
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?", root):
        problems.append(f"{LAUNCHER_CM}: defaultPipelineRoot {root!r} is not an s3://bucket/prefix URI")
    try:
        providers = yaml.safe_load(data.get("providers", ""))
    except yaml.YAMLError as e:
        return problems + [f"{LAUNCHER_CM}: providers is not YAML: {e}"]
    for err in jsonschema.Draft202012Validator(PROVIDERS_SCHEMA).iter_errors(providers):
        loc = "/".join(str(p) for p in err.absolute_path) or "(top)"
        problems.append(f"{LAUNCHER_CM}: providers {loc}: {err.message}")
    if problems:
        return problems
    creds = providers["s3"]["default"]["credentials"]
    if creds.get("fromEnv") and "secretRef" in creds:
        problems.append(f"{LAUNCHER_CM}: credentials has fromEnv and a secretRef; the launcher ignores the secretRef")
    return problems


def _providers_default(objs: list[dict]) -> dict:
    return yaml.safe_load(find(objs, "ConfigMap", LAUNCHER_CM)["data"]["providers"])["s3"]["default"]


def secret_keys(secret: dict) -> set[str]:
    return set(secret.get("data") or {}) | set(secret.get("stringData") or {})


def _secret_values(secret: dict) -> dict[str, str]:
    values = dict(secret.get("stringData") or {})
    values.update({k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()})
    return values


def secret_ref_problems(objs: list[dict]) -> list[str]:
    """The Secret kfp-launcher names, with the keys it names, is rendered (with a secretRef), or
    the launcher's credentials come from IRSA on the run's service account (fromEnv)."""
    creds = _providers_default(objs)["credentials"]
    if creds.get("fromEnv"):
        return irsa_problems(objs)
    ref = creds["secretRef"]
    keys = {ref["accessKeyKey"], ref["secretKeyKey"]}
    secret = find(objs, "Secret", ref["secretName"])
    if secret is None:
        return [f"kfp-launcher names Secret {ref['secretName']}, which is not rendered"]
    problems = [f"Secret {ref['secretName']} lacks key {k} named by kfp-launcher" for k in sorted(keys - secret_keys(secret))]
    problems += [f"Secret {ref['secretName']}: {k} is empty" for k in sorted(keys) if _secret_values(secret).get(k) == ""]
    if secret.get("type", "Opaque") != "Opaque":
        problems.append(f"Secret {ref['secretName']} has type {secret.get('type')}, want Opaque")
    return problems


def irsa_problems(objs: list[dict]) -> list[str]:
    """fromEnv: every seedbed service account assumes an IAM role, and no static key is set
    that the AWS SDKs would prefer to it."""
    problems = []
    for sa in (RUNNER, TRAINER_SA):
        obj = find(objs, "ServiceAccount", sa)
        arn = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(IRSA_ANNOTATION, "")
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", arn):
            problems.append(f"ServiceAccount {sa}: no IAM role in {IRSA_ANNOTATION} ({arn!r}), but kfp-launcher takes credentials from the environment")
    secret = find(objs, "Secret", S3_SECRET)
    for k, v in sorted(_secret_values(secret or {}).items()):
        if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") and v:
            problems.append(f"Secret {S3_SECRET}: {k} is set, so the SDKs would use it instead of the role")
    return problems


def store_env_problems(objs: list[dict]) -> list[str]:
    """The Secret's AWS_ENDPOINT_URL(_S3) / AWS_REGION, which seedbed.store reads in every task,
    describe the store kfp-launcher describes."""
    d = _providers_default(objs)
    secret = find(objs, "Secret", S3_SECRET)
    if secret is None:
        return [f"no Secret {S3_SECRET}: the tasks read the store's settings from it"]
    env = _secret_values(secret)
    name = f"Secret {S3_SECRET}"
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    problems = []
    if not endpoint:
        problems.append(f"{name}: no AWS_ENDPOINT_URL: seedbed.store would talk to AWS, the launcher to {d['endpoint']}")
    if not region:
        problems.append(f"{name}: no AWS_REGION")
    if problems:
        return problems
    url = urlparse(endpoint)
    want_scheme = "http" if d["disableSSL"] else "https"
    if url.scheme != want_scheme:
        problems.append(f"{name}: AWS_ENDPOINT_URL scheme {url.scheme!r}, want {want_scheme!r} (disableSSL={d['disableSSL']})")
    if url.path not in ("", "/"):
        problems.append(f"{name}: AWS_ENDPOINT_URL has a path {url.path!r}")
    if _AWS_GLOBAL.match(d["endpoint"].lower()):
        allowed = {"s3.amazonaws.com", f"s3.{d['region']}.amazonaws.com"}
    else:
        allowed = {re.sub(r"^https?://", "", d["endpoint"]).rstrip("/")}
    if url.netloc not in allowed:
        problems.append(f"{name}: AWS_ENDPOINT_URL host {url.netloc!r}, kfp-launcher says {sorted(allowed)}")
    if region != d["region"]:
        problems.append(f"{name}: AWS_REGION {region!r} != kfp-launcher region {d['region']!r}")
    # seedbed.store addresses buckets path-style unless SEEDBED_S3_ADDRESSING_STYLE says otherwise
    style = env.get("SEEDBED_S3_ADDRESSING_STYLE", "path")
    if (style == "path") != d["forcePathStyle"]:
        problems.append(f"{name}: seedbed.store uses {style!r} addressing, kfp-launcher forcePathStyle={d['forcePathStyle']}")
    return problems


# ----------------------------------------------------------------------------- compiled pipelines


@functools.lru_cache(maxsize=None)
def _pipeline_references() -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    """(pipeline, kind, name, keys) for every Secret/ConfigMap that a compiled pipeline attaches
    to a task, non-optionally (kfp-kubernetes platform spec)."""
    import tempfile

    from pipelines.compile import compile_all

    refs = set()
    with tempfile.TemporaryDirectory() as tmp:
        for path in compile_all(tmp):
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            for doc in docs[1:]:
                executors = doc.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
                for cfg in executors.values():
                    for field_, kind in (("secretAsEnv", "Secret"), ("configMapAsEnv", "ConfigMap"),
                                         ("secretAsVolume", "Secret"), ("configMapAsVolume", "ConfigMap")):
                        for item in cfg.get(field_, []):
                            if item.get("optional"):
                                continue
                            nm = item.get("secretName") or item.get("configMapName")
                            param = item.get("secretNameParameter") or item.get("configMapNameParameter") or {}
                            nm = nm or param.get("runtimeValue", {}).get("constant")
                            if not nm:
                                continue  # chosen at run time: nothing to check statically
                            keys = tuple(sorted(k.get("secretKey") or k.get("configMapKey") for k in item.get("keyToEnv", [])))
                            refs.add((path.stem, kind, nm, keys))
    return tuple(sorted(refs))


def pipeline_reference_problems(objs: list[dict], refs) -> list[str]:
    problems = []
    for pipeline, kind, name, keys in refs:
        obj = find(objs, kind, name)
        if obj is None:
            problems.append(f"{pipeline} attaches {kind} {name}, which is not rendered")
            continue
        have = secret_keys(obj) if kind == "Secret" else set(obj.get("data") or {}) | set(obj.get("binaryData") or {})
        problems += [f"{pipeline} reads key {k} of {kind} {name}, which it lacks" for k in keys if k not in have]
    return problems


# ----------------------------------------------------------------------------- RBAC


def role_allows(role: dict, group: str, resource: str, verb: str, name: str | None = None) -> bool:
    for rule in role.get("rules") or []:
        if (
            group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])
        ) and (resource in rule.get("resources", []) or "*" in rule.get("resources", [])) and (
            verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])
        ):
            names = rule.get("resourceNames")
            if not names or name in names:
                return True
    return False


def rbac_problems(objs: list[dict]) -> list[str]:
    """Runs may drive TrainJobs and read what the launcher reads; the Role grants nothing else."""
    problems = []
    for sa in (RUNNER, TRAINER_SA):
        if find(objs, "ServiceAccount", sa) is None:
            problems.append(f"no ServiceAccount {sa}")
    binding = find(objs, "RoleBinding", RUNNER)
    if binding is None:
        return problems + [f"no RoleBinding {RUNNER}"]
    ref = binding.get("roleRef", {})
    role = find(objs, "Role", ref.get("name")) if ref.get("kind") == "Role" else None
    if role is None or ref.get("apiGroup") != "rbac.authorization.k8s.io":
        return problems + [f"RoleBinding {RUNNER} refers to {ref}, which is not a rendered Role"]
    subjects = {s.get("name") for s in binding.get("subjects") or [] if s.get("kind") == "ServiceAccount"}
    if RUNNER not in subjects:
        problems.append(f"RoleBinding {RUNNER} does not bind ServiceAccount {RUNNER}")
    if TRAINER_SA in subjects or any(TRAINER_SA == s.get("name") for b in of_kind(objs, "RoleBinding") for s in b.get("subjects") or []):
        problems.append(f"ServiceAccount {TRAINER_SA} is bound to a Role: training pods need no API access")
    for s in binding.get("subjects") or []:
        if s.get("kind") == "ServiceAccount" and s.get("apiGroup"):
            problems.append(f"ServiceAccount subject {s.get('name')} must not set apiGroup")
    for verb in sorted(TRAINJOB_VERBS):
        if not role_allows(role, "trainer.kubeflow.org", "trainjobs", verb):
            problems.append(f"Role {role['metadata']['name']} does not allow {verb} trainer.kubeflow.org/trainjobs")
    if not role_allows(role, "", "configmaps", "get", LAUNCHER_CM):
        problems.append(f"Role cannot get ConfigMap {LAUNCHER_CM}")
    creds = _providers_default(objs)["credentials"] if find(objs, "ConfigMap", LAUNCHER_CM) else {}
    if creds.get("secretRef") and not role_allows(role, "", "secrets", "get", creds["secretRef"]["secretName"]):
        problems.append(f"Role cannot get Secret {creds['secretRef']['secretName']}, which the launcher reads as the run's service account")
    # least privilege: each rule is one of ALLOWED_RULES, no wildcard, names where required
    for i, rule in enumerate(role.get("rules") or []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                allowed = ALLOWED_RULES.get((group, resource))
                if allowed is None:
                    problems.append(f"Role rule {i}: {group or 'core'}/{resource} is not something seedbed needs")
                    continue
                verbs, names = allowed
                if set(rule.get("verbs", [])) - verbs:
                    problems.append(f"Role rule {i}: verbs {sorted(set(rule['verbs']) - verbs)} on {resource} exceed {sorted(verbs)}")
                if names and not (rule.get("resourceNames") and set(rule["resourceNames"]) <= names):
                    problems.append(f"Role rule {i}: {resource} must be limited to resourceNames {sorted(names)}")
    return problems


# ----------------------------------------------------------------------------- training runtimes


def runtime_problems(objs: list[dict]) -> list[str]:
    """A TrainingRuntime for every runtime seedbed.launch knows, each running the training image
    as its non-root user under the trainer account, with the ML policy its launcher expects."""
    from components._images import IMAGES
    from seedbed.launch.trainjob import RUNTIMES

    image = IMAGES["seedbed-train"].ref
    problems = []
    for name, launcher in sorted(RUNTIMES.items()):
        rt = find(objs, "TrainingRuntime", name)
        if rt is None:
            problems.append(f"no TrainingRuntime {name}")
            continue
        policy = rt["spec"].get("mlPolicy") or {}
        want = "torch" if launcher == "torchrun" else "mpi"
        if want not in policy:
            problems.append(f"TrainingRuntime {name}: mlPolicy has no {want} (seedbed starts it with {launcher})")
        elif want == "mpi" and policy["mpi"].get("mpiImplementation") != "OpenMPI":
            problems.append(f"TrainingRuntime {name}: the rendered mpirun command is OpenMPI's")
        jobs = rt["spec"]["template"]["spec"]["replicatedJobs"]
        ancestors = [j["name"] for j in jobs if (j["template"].get("metadata", {}).get("labels") or {})
                     .get("trainer.kubeflow.org/trainjob-ancestor-step") == "trainer"]
        if len(ancestors) != 1:
            problems.append(f"TrainingRuntime {name}: {len(ancestors)} jobs marked trainjob-ancestor-step=trainer, want 1")
        for job in jobs:
            pod = job["template"]["spec"]["template"]["spec"]
            where = f"TrainingRuntime {name} job {job['name']}"
            if pod.get("serviceAccountName") != TRAINER_SA:
                problems.append(f"{where}: runs as {pod.get('serviceAccountName')!r}, want {TRAINER_SA}")
            sc = pod.get("securityContext") or {}
            if not sc.get("runAsNonRoot") or sc.get("runAsUser") != 1000:
                problems.append(f"{where}: must run as the image's non-root uid 1000 (runAsNonRoot)")
            nodes = [c for c in pod.get("containers", []) if c["name"] == "node"]
            if len(nodes) != 1 or nodes[0].get("image") != image:
                problems.append(f"{where}: container node must run {image}, not {[c.get('image') for c in nodes]}")
    return problems


# ----------------------------------------------------------------------------- quota


def quota_problems(objs: list[dict]) -> list[str]:
    quotas = of_kind(objs, "ResourceQuota")
    if len(quotas) != 1:
        return [f"expected one ResourceQuota, found {len(quotas)}"]
    hard = quotas[0]["spec"].get("hard") or {}
    problems = [f"ResourceQuota: no {k}" for k in (GPU_QUOTA, "requests.cpu", "requests.memory") if k not in hard]
    problems += [f"ResourceQuota: {k} is limited by requests only for extended resources" for k in hard if k.startswith("limits.nvidia.com")]
    defaults = [lim.get("defaultRequest") or {} for lr in of_kind(objs, "LimitRange")
                for lim in lr["spec"]["limits"] if lim.get("type") == "Container"]
    for res in ("cpu", "memory"):
        if f"requests.{res}" in hard and not any(res in d for d in defaults):
            problems.append(f"ResourceQuota limits requests.{res} but no LimitRange gives containers a default {res} request")
    return problems


def _hard(objs: list[dict], key: str):
    return parse_quantity(of_kind(objs, "ResourceQuota")[0]["spec"]["hard"][key])


# ----------------------------------------------------------------------------- credentials

_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA)[A-Z0-9]{16}\b")
_LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{32,}(?![A-Za-z0-9/+=])")


def credential_problems(text: str, where: str) -> list[str]:
    problems = [f"{where}: looks like an AWS access key id: {m.group(0)[:8]}..." for m in _AWS_KEY_ID.finditer(text)]
    for m in _LONG_TOKEN.finditer(text):
        tok = m.group(0)
        if re.search(r"[a-z]", tok) and re.search(r"[A-Z]", tok) and re.search(r"[0-9]", tok):
            problems.append(f"{where}: looks like a secret key: {tok[:6]}...")
    return problems


_CREDENTIAL_KEY = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.I)


def secret_value_problems(objs: list[dict]) -> list[str]:
    problems = []
    for s in of_kind(objs, "Secret"):
        for k, v in _secret_values(s).items():
            if _CREDENTIAL_KEY.search(k) and v not in ALLOWED_SECRET_VALUES:
                problems.append(
                    f"Secret {s['metadata']['name']}: {k} holds a value that is neither a placeholder, a dev "
                    f"store default nor empty; real credentials come from IRSA, a sealed secret or External Secrets"
                )
    return problems


# ============================================================================= tests


def test_there_are_overlays():
    assert set(OVERLAYS) == {"dev", "prod"}, OVERLAYS


@needs_kubectl
@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_every_object_validates_strictly(target):
    objs = render(BASE if target == "base" else MANIFESTS / "overlays" / target)
    kinds = {(o["apiVersion"], o["kind"]) for o in objs}
    assert kinds == BUILTIN_KINDS | set(CUSTOM_KINDS), kinds  # every kind is there, and checked
    assert [p for o in objs for p in object_problems(o)] == []


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_lands_in_one_namespace_labelled_and_complete(name):
    objs = overlay(name)
    assert namespace_problems(objs) == []
    assert of_kind(objs, "Namespace")[0]["metadata"]["name"] == NAMESPACE
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {("ConfigMap", LAUNCHER_CM), ("Secret", S3_SECRET), ("ServiceAccount", RUNNER), ("ServiceAccount", TRAINER_SA),
            ("Role", RUNNER), ("RoleBinding", RUNNER)} <= kinds
    for o in objs:
        assert o["metadata"].get("labels", {}).get(PART_OF[0]) == PART_OF[1], f"{o['kind']}/{o['metadata']['name']} lacks the seedbed label"
    assert PLACEHOLDER not in _render_text(str(MANIFESTS / "overlays" / name)), (
        f"overlay {name} leaves a {PLACEHOLDER} placeholder of the base unpatched"
    )


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_kfp_launcher_config_is_what_the_launcher_reads(name):
    objs = overlay(name)
    assert launcher_problems(find(objs, "ConfigMap", LAUNCHER_CM)) == []
    assert secret_ref_problems(objs) == []


@needs_kubectl
def test_base_renders_the_secret_template_with_the_launcher_keys():
    objs = render(BASE)
    assert secret_ref_problems(objs) == []
    # the base's bucket is a placeholder (REPLACE_ME, which overlays must patch); the layout is real
    problems = launcher_problems(find(objs, "ConfigMap", LAUNCHER_CM))
    assert [p for p in problems if "defaultPipelineRoot" not in p] == []


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_task_environment_matches_launcher(name):
    assert store_env_problems(overlay(name)) == []


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_compiled_pipelines_find_their_secrets_and_config_maps(name):
    refs = _pipeline_references()
    assert refs, "no compiled pipeline attaches a Secret or ConfigMap: how do tasks reach S3?"
    assert any(kind == "Secret" and nm == S3_SECRET for _, kind, nm, _ in refs), refs
    assert pipeline_reference_problems(overlay(name), refs) == []


@needs_kubectl
@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_rbac_is_what_runs_need_and_no_more(target):
    assert rbac_problems(render(BASE if target == "base" else MANIFESTS / "overlays" / target)) == []


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_training_runtimes_run_the_training_image(name):
    objs = overlay(name)
    assert runtime_problems(objs) == []


@needs_kubectl
@pytest.mark.parametrize("runtime", ["torch-distributed", "deepspeed-distributed"])
def test_trainjobs_for_the_namespaced_runtimes_refer_to_rendered_ones(runtime):
    import warnings

    from components._images import IMAGES
    from seedbed.launch.trainjob import LaunchSpec, render_trainjob

    objs = overlay("dev")
    spec = LaunchSpec(name="t1", namespace=NAMESPACE, image=IMAGES["seedbed-train"].ref, config_uri="s3://b/c.json",
                      runtime=runtime, runtime_kind="TrainingRuntime", nodes=2, gpus_per_node=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = render_trainjob(spec)["spec"]["runtimeRef"]
    rt = find(objs, ref["kind"], ref["name"])
    assert rt is not None and rt["apiVersion"] == f"{ref['apiGroup']}/v1alpha1" and rt["metadata"]["namespace"] == spec.namespace


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_pipelines_default_to_a_runtime_the_overlay_installs(name):
    """What a training pipeline's TrainJob references by default (runtime_kind, and every runtime
    seedbed knows) is installed in the namespace and runs every pod as seedbed-trainer: in prod,
    the account that carries the IAM role."""
    from pipelines import registry
    from seedbed.launch.trainjob import RUNTIMES

    objs = overlay(name)
    kinds = {p: fn.component_spec.inputs["runtime_kind"].default for p, fn in registry().items()
             if "runtime_kind" in fn.component_spec.inputs}
    assert set(kinds) == {"train-lm", "staged-growth", "mixture-fit", "curate-and-grow"}
    assert set(kinds.values()) == {"TrainingRuntime"}
    for runtime in RUNTIMES:
        rt = find(objs, "TrainingRuntime", runtime)
        assert rt is not None and rt["metadata"]["namespace"] == NAMESPACE, runtime
        accounts = {j["template"]["spec"]["template"]["spec"].get("serviceAccountName")
                    for j in rt["spec"]["template"]["spec"]["replicatedJobs"]}
        assert accounts == {TRAINER_SA}, (runtime, accounts)
    sa = find(objs, "ServiceAccount", TRAINER_SA)
    assert sa is not None
    if name == "prod":
        assert (sa["metadata"].get("annotations") or {}).get(IRSA_ANNOTATION, "").startswith("arn:aws:iam::")


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_quota_limits_gpus_and_lets_pods_in(name):
    assert quota_problems(overlay(name)) == []


@needs_kubectl
def test_dev_quota_is_smaller_than_prod():
    dev, prod = overlay("dev"), overlay("prod")
    for key in (GPU_QUOTA, "requests.cpu", "requests.memory"):
        assert _hard(dev, key) < _hard(prod, key), key


@needs_kubectl
@pytest.mark.parametrize("name", OVERLAYS)
def test_no_real_credentials_in_rendered_secrets(name):
    objs = overlay(name)
    assert secret_value_problems(objs) == []
    assert credential_problems(_render_text(str(MANIFESTS / "overlays" / name)), name) == []


def test_no_real_looking_credentials_in_committed_files():
    files = [p for p in MANIFESTS.rglob("*") if p.is_file()]
    files += [p for p in (REPO / "docs" / "cluster.md", REPO / "images" / "README.md") if p.is_file()]
    assert files
    problems = [q for p in files for q in credential_problems(p.read_text(), str(p.relative_to(REPO)))]
    assert problems == []


@needs_kubectl
def test_dev_overlay_targets_the_in_cluster_store():
    objs = overlay("dev")
    d = _providers_default(objs)
    assert d["endpoint"] == "seaweedfs.kubeflow:8333" and d["disableSSL"] is True and d["forcePathStyle"] is True
    assert d["credentials"]["secretRef"]["secretName"] == S3_SECRET
    assert _secret_values(find(objs, "Secret", S3_SECRET))["AWS_ENDPOINT_URL"] == "http://seaweedfs.kubeflow:8333"


@needs_kubectl
def test_prod_overlay_targets_aws_s3_with_irsa():
    objs = overlay("prod")
    d = _providers_default(objs)
    assert d["endpoint"] == "s3.amazonaws.com" and d["disableSSL"] is False
    assert re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", d["region"]), d["region"]
    assert d["credentials"] == {"fromEnv": True}
    assert irsa_problems(objs) == []


# ----------------------------------------------------------------------------- the checks can fail


@pytest.fixture
def dev():
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the manifests")
    return overlay("dev")


@pytest.fixture
def prod():
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the manifests")
    return overlay("prod")


def _set_providers(objs, mutate):
    cm = find(objs, "ConfigMap", LAUNCHER_CM)
    p = yaml.safe_load(cm["data"]["providers"])
    mutate(p)
    cm["data"]["providers"] = yaml.safe_dump(p)
    return cm


def test_strict_validation_rejects_unknown_missing_and_mistyped_fields(dev):
    cm = copy.deepcopy(find(dev, "ConfigMap", LAUNCHER_CM))
    cm["date"] = cm.pop("data")  # typo of a top-level field
    assert any("'date' was unexpected" in p for p in object_problems(cm))

    rb = copy.deepcopy(find(dev, "RoleBinding", RUNNER))
    del rb["roleRef"]["name"]
    assert any("roleRef" in p and "'name' is a required property" in p for p in object_problems(rb))

    role = copy.deepcopy(find(dev, "Role", RUNNER))
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")
    assert object_problems(role)

    quota = copy.deepcopy(of_kind(dev, "ResourceQuota")[0])
    quota["spec"]["hard"][GPU_QUOTA] = ["2"]
    assert any(GPU_QUOTA in p for p in object_problems(quota))

    secret = copy.deepcopy(find(dev, "Secret", S3_SECRET))
    secret["stringData"]["AWS_ACCESS_KEY_ID"] = 12345
    assert any("stringData.AWS_ACCESS_KEY_ID" in p for p in object_problems(secret))
    secret = copy.deepcopy(find(dev, "Secret", S3_SECRET))
    secret["data"] = {"AWS_ACCESS_KEY_ID": "not base64!"}
    assert any("base64" in p for p in object_problems(secret))

    assert object_problems({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    assert object_problems({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"}})


def test_round_trip_rejects_unknown_and_mistyped_custom_fields(dev):
    rt = find(dev, "TrainingRuntime", "torch-distributed")
    assert object_problems(rt) == []
    typo = copy.deepcopy(rt)
    typo["spec"]["template"]["spec"]["replicatedJob"] = typo["spec"]["template"]["spec"].pop("replicatedJobs")
    assert any("replicatedJob: dropped" in p for p in object_problems(typo))
    old_field = copy.deepcopy(rt)  # Trainer moved numProcPerNode from mlPolicy.torch to the TrainJob
    old_field["spec"]["mlPolicy"]["torch"]["numProcPerNode"] = "auto"
    assert any("numProcPerNode: dropped" in p for p in object_problems(old_field))
    nested = copy.deepcopy(rt)
    nested["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy2"] = "Always"
    assert any("imagePullPolicy2: dropped" in p for p in object_problems(nested))
    mistyped = copy.deepcopy(find(dev, "TrainingRuntime", "deepspeed-distributed"))
    mistyped["spec"]["mlPolicy"]["mpi"]["numProcPerNode"] = "8"
    assert any("TrainingRuntime" in p for p in object_problems(mistyped))


def test_namespace_check_catches_strays(dev):
    objs = copy.deepcopy(dev)
    del find(objs, "Role", RUNNER)["metadata"]["namespace"]
    assert any(p.startswith("Role/") for p in namespace_problems(objs))
    objs = copy.deepcopy(dev) + [{"kind": "Namespace", "metadata": {"name": "other"}}]
    assert namespace_problems(objs)


def test_launcher_check_rejects_typos_and_wrong_types(dev):
    def typo(p):
        p["s3"]["default"]["forcePathstyle"] = p["s3"]["default"].pop("forcePathStyle")

    assert any("forcePathstyle" in x or "forcePathStyle" in x for x in launcher_problems(_set_providers(copy.deepcopy(dev), typo)))

    def string_bool(p):
        p["s3"]["default"]["disableSSL"] = "true"

    assert any("disableSSL" in x for x in launcher_problems(_set_providers(copy.deepcopy(dev), string_bool)))

    def no_secret_ref(p):
        del p["s3"]["default"]["credentials"]["secretRef"]

    assert launcher_problems(_set_providers(copy.deepcopy(dev), no_secret_ref))

    def both(p):
        p["s3"]["default"]["credentials"]["fromEnv"] = True

    assert any("ignores the secretRef" in x for x in launcher_problems(_set_providers(copy.deepcopy(dev), both)))

    def flat_layout(p):  # endpoint directly under s3: (no `default:`), an old layout the launcher ignores
        p["s3"] = p["s3"]["default"]

    assert launcher_problems(_set_providers(copy.deepcopy(dev), flat_layout))

    objs = copy.deepcopy(dev)
    find(objs, "ConfigMap", LAUNCHER_CM)["data"]["defaultPipelineRoot"] = "minio://mlpipeline/seedbed"
    assert any("defaultPipelineRoot" in x for x in launcher_problems(find(objs, "ConfigMap", LAUNCHER_CM)))


def test_secret_ref_check_catches_a_wrong_key_name_or_an_empty_key(dev):
    objs = copy.deepcopy(dev)
    _set_providers(objs, lambda p: p["s3"]["default"]["credentials"]["secretRef"].update(accessKeyKey="AWS_ACCESS_KEY"))
    assert any("AWS_ACCESS_KEY" in x for x in secret_ref_problems(objs))
    objs = copy.deepcopy(dev)
    _set_providers(objs, lambda p: p["s3"]["default"]["credentials"]["secretRef"].update(secretName="other"))
    assert secret_ref_problems(objs)
    objs = copy.deepcopy(dev)
    find(objs, "Secret", S3_SECRET)["stringData"]["AWS_SECRET_ACCESS_KEY"] = ""
    assert any("is empty" in x for x in secret_ref_problems(objs))


def test_irsa_check_needs_a_role_and_no_static_keys(prod):
    objs = copy.deepcopy(prod)
    del find(objs, "ServiceAccount", TRAINER_SA)["metadata"]["annotations"]
    assert any(TRAINER_SA in p for p in secret_ref_problems(objs))
    objs = copy.deepcopy(prod)
    find(objs, "ServiceAccount", RUNNER)["metadata"]["annotations"][IRSA_ANNOTATION] = "seedbed-role"
    assert any(RUNNER in p for p in irsa_problems(objs))
    objs = copy.deepcopy(prod)
    find(objs, "Secret", S3_SECRET)["stringData"]["AWS_ACCESS_KEY_ID"] = "minio"
    assert any("instead of the role" in p for p in irsa_problems(objs))


def test_env_check_catches_a_different_store(dev):
    for key, value in [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ENDPOINT_URL", "https://seaweedfs.kubeflow:8333"),
        ("AWS_ENDPOINT_URL", "http://minio-service.kubeflow:9000"),
        ("SEEDBED_S3_ADDRESSING_STYLE", "virtual"),
        ("AWS_ENDPOINT_URL", None),
    ]:
        objs = copy.deepcopy(dev)
        data = find(objs, "Secret", S3_SECRET)["stringData"]
        if value is None:
            del data[key]
        else:
            data[key] = value
        assert store_env_problems(objs), (key, value)
    assert store_env_problems([o for o in copy.deepcopy(dev) if o["kind"] != "Secret"])


def test_pipeline_reference_check_catches_missing_keys_and_objects(dev):
    refs = (("p", "Secret", S3_SECRET, ("AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")),)
    assert any("AWS_SESSION_TOKEN" in p for p in pipeline_reference_problems(dev, refs))
    refs = (("p", "ConfigMap", "seedbed-extra", ("X",)),)
    assert pipeline_reference_problems(dev, refs)
    no_secret = [o for o in dev if o["kind"] != "Secret"]
    assert pipeline_reference_problems(no_secret, (("p", "Secret", S3_SECRET, ("AWS_REGION",)),))


def test_rbac_check_catches_missing_and_excess_grants(dev):
    objs = copy.deepcopy(dev)
    role = find(objs, "Role", RUNNER)
    role["rules"] = [r for r in role["rules"] if "trainjobs" not in r.get("resources", [])]
    assert any("trainjobs" in p for p in rbac_problems(objs))

    objs = copy.deepcopy(dev)
    for r in find(objs, "Role", RUNNER)["rules"]:
        if "secrets" in r.get("resources", []):
            r["resourceNames"] = ["some-other-secret"]
    assert any("Secret seedbed-s3" in p for p in rbac_problems(objs))

    objs = copy.deepcopy(dev)
    find(objs, "RoleBinding", RUNNER)["roleRef"]["name"] = "missing"
    assert rbac_problems(objs)

    for extra in ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},  # every Secret
                  {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
                  {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]},
                  {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainingruntimes"], "verbs": ["get"]}):
        objs = copy.deepcopy(dev)
        find(objs, "Role", RUNNER)["rules"].append(extra)
        assert rbac_problems(objs), extra

    objs = copy.deepcopy(dev)
    find(objs, "RoleBinding", RUNNER)["subjects"].append({"kind": "ServiceAccount", "name": TRAINER_SA})
    assert any(TRAINER_SA in p for p in rbac_problems(objs))


def test_runtime_check_catches_a_wrong_image_account_or_policy(dev):
    for mutate in (
        lambda rt: rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0].update(image="pytorch/pytorch:2.7.1"),
        lambda rt: rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"].pop("serviceAccountName"),
        lambda rt: rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"].pop("securityContext"),
        lambda rt: rt["spec"]["mlPolicy"].pop("mpi"),
        lambda rt: rt["spec"]["template"]["spec"]["replicatedJobs"][1]["template"].pop("metadata"),
    ):
        objs = copy.deepcopy(dev)
        mutate(find(objs, "TrainingRuntime", "deepspeed-distributed"))
        assert runtime_problems(objs)
    assert runtime_problems([o for o in dev if o["kind"] != "TrainingRuntime"])


def test_quota_check_needs_gpu_requests_and_default_requests(dev):
    objs = copy.deepcopy(dev)
    del of_kind(objs, "ResourceQuota")[0]["spec"]["hard"][GPU_QUOTA]
    assert any(GPU_QUOTA in p for p in quota_problems(objs))
    objs = [o for o in copy.deepcopy(dev) if o["kind"] != "LimitRange"]
    assert any("LimitRange" in p for p in quota_problems(objs))


def test_credential_checks_catch_real_looking_keys(dev):
    # assembled at run time so that this file itself holds no key-shaped literal
    key_id = "AKIA" + "Q3EXAMPLE7QZ4XW2YV"[:16]
    secret = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCY3XAMPLEKEY"
    assert credential_problems(f"AWS_ACCESS_KEY_ID: {key_id}", "x")
    assert credential_problems(f"AWS_SECRET_ACCESS_KEY: {secret}", "x")
    objs = copy.deepcopy(dev)
    find(objs, "Secret", S3_SECRET)["stringData"]["AWS_SECRET_ACCESS_KEY"] = "hunter2hunter2"
    assert secret_value_problems(objs)
