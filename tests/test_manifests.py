"""Static checks of manifests/ (kustomize): what a KFP namespace needs to run seedbed.

Each overlay is rendered with `kubectl kustomize`, and every object is checked against the
Kubernetes OpenAPI models of the `kubernetes` python client (unknown fields, missing required
fields, wrong types), then against what KFP and seedbed read from it:
- the kfp-launcher ConfigMap's `providers` block has the layout the KFP v2 launcher parses
  (backend/src/v2/config/s3.go) and names a Secret and keys that the overlay renders (or, for
  the overlays that leave the Secret to External Secrets / sealed secrets, that are documented);
- every Secret/ConfigMap key that the compiled pipelines (pipelines.registry()) attach to their
  tasks exists in each overlay, and the Secret's AWS_ENDPOINT_URL / AWS_REGION (what seedbed's
  own S3 client reads) describe the same store as the launcher config;
- the Role lets runs create and watch Kubeflow Trainer TrainJobs and read the artifact Secret;
- no credential that looks real is committed.
The checks are functions returning a list of problems; the tests at the bottom feed them broken
copies to show that each one fails when it should.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes.client
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").glob("*") if (p / "kustomization.yaml").is_file())

#: overlays that on purpose render no credentials Secret (it comes from a sealed secret or
#: External Secrets, so `kubectl apply -k` must never overwrite it with placeholders); their
#: kustomization.yaml must say which keys the Secret needs
EXTERNAL_SECRET_OVERLAYS = {"aws"}
#: the only values a committed Secret may hold: base placeholders and a dev MinIO's public defaults
ALLOWED_SECRET_VALUES = {"REPLACE_ME", "minio", "minio123"}
PLACEHOLDER = "REPLACE_ME"

PART_OF = ("app.kubernetes.io/part-of", "seedbed")
LAUNCHER_CM = "kfp-launcher"
S3_SECRET = "seedbed-s3"
RUNNER = "seedbed-pipeline-runner"
TRAINJOB_VERBS = {"create", "get", "list", "watch", "delete"}

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


def find(objs: list[dict], kind: str, name: str) -> dict | None:
    hits = [o for o in objs if o.get("kind") == kind and o.get("metadata", {}).get("name") == name]
    assert len(hits) <= 1, f"{len(hits)} {kind}s named {name}"
    return hits[0] if hits else None


# ----------------------------------------------------------------------------- Kubernetes models

#: (apiVersion, kind) -> model class name in kubernetes.client; any other kind fails the check
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
}

_PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
}


@functools.lru_cache(maxsize=None)
def _required_attrs(klass_name: str) -> frozenset[str]:
    """Attributes the model's setters refuse to leave unset (the OpenAPI `required` list)."""
    klass = getattr(kubernetes.client, klass_name)
    obj = klass.__new__(klass)
    obj.local_vars_configuration = kubernetes.client.Configuration.get_default_copy()
    obj.local_vars_configuration.client_side_validation = True
    required = set()
    for attr in klass.openapi_types:
        try:
            setattr(obj, attr, None)
        except ValueError:
            required.add(attr)
    return frozenset(required)


def _walk(value, type_name: str, path: str, problems: list[str]) -> None:
    if type_name.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _walk(item, type_name[5:-1], f"{path}[{i}]", problems)
        return
    if type_name.startswith("dict("):
        inner = re.fullmatch(r"dict\(str, (.+)\)", type_name).group(1)
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(f"{path}: key {k!r} is not a string")
            _walk(v, inner, f"{path}.{k}", problems)
        return
    if type_name == "object":
        return
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        if not ok:
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    klass = getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({type_name}), got {type(value).__name__}")
        return
    json_to_attr = {j: a for a, j in klass.attribute_map.items()}
    for key, v in value.items():
        if key not in json_to_attr:
            problems.append(f"{path}.{key}: unknown field for {type_name} (known: {sorted(json_to_attr)})")
            continue
        if v is not None:
            _walk(v, klass.openapi_types[json_to_attr[key]], f"{path}.{key}", problems)
    for attr in _required_attrs(type_name):
        if value.get(klass.attribute_map[attr]) is None:
            problems.append(f"{path}.{klass.attribute_map[attr]}: required field of {type_name} is missing")


class _FakeResponse:
    def __init__(self, obj: dict):
        self.data = json.dumps(obj)


def k8s_problems(obj: dict) -> list[str]:
    """Everything wrong with OBJ as a Kubernetes object of a kind these manifests may contain."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    where = f"{key[1]}/{obj.get('metadata', {}).get('name')}"
    if key not in MODELS:
        return [f"{where}: unexpected apiVersion/kind {key} (known: {sorted(MODELS)})"]
    problems: list[str] = []
    _walk(obj, MODELS[key], where, problems)
    if not obj.get("metadata", {}).get("name"):
        problems.append(f"{where}: metadata.name is missing")
    if not problems:
        try:  # the client's own deserializer: types, enums, required fields once more
            kubernetes.client.ApiClient().deserialize(_FakeResponse(obj), MODELS[key])
        except (ValueError, TypeError) as e:
            problems.append(f"{where}: {e}")
    if key == ("v1", "Secret"):
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except (ValueError, TypeError):
                problems.append(f"{where}: data.{k} is not valid base64")
    return problems


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
    if creds.get("fromEnv", False):
        problems.append(f"{LAUNCHER_CM}: seedbed's overlays give the launcher a secretRef, not fromEnv")
    return problems


def _providers_default(objs: list[dict]) -> dict:
    return yaml.safe_load(find(objs, "ConfigMap", LAUNCHER_CM)["data"]["providers"])["s3"]["default"]


def secret_keys(secret: dict) -> set[str]:
    return set(secret.get("data") or {}) | set(secret.get("stringData") or {})


def external_secret_doc_problems(overlay_dir: Path, name: str, keys, needed_by: str) -> list[str]:
    """An overlay that leaves a Secret to an external source must show how to create it: a
    `create secret generic NAME` with a `--from-literal=KEY=` for every key that is read."""
    doc = (overlay_dir / "kustomization.yaml").read_text()
    problems = []
    if not re.search(rf"create secret generic {re.escape(name)}\b", doc):
        problems.append(f"{overlay_dir.name}: kustomization.yaml does not show how to create Secret {name}")
    problems += [
        f"{overlay_dir.name}: kustomization.yaml does not list key {k} of Secret {name}, which {needed_by} reads"
        for k in keys
        if f"--from-literal={k}=" not in doc
    ]
    return problems


def secret_ref_problems(objs: list[dict], overlay_dir: Path | None = None) -> list[str]:
    """The Secret kfp-launcher names, with the keys it names, is rendered (or, for overlays
    that leave it to an external source, documented in the overlay's kustomization.yaml)."""
    ref = _providers_default(objs)["credentials"]["secretRef"]
    keys = {ref["accessKeyKey"], ref["secretKeyKey"]}
    secret = find(objs, "Secret", ref["secretName"])
    if secret is None:
        if overlay_dir is None or overlay_dir.name not in EXTERNAL_SECRET_OVERLAYS:
            return [f"kfp-launcher names Secret {ref['secretName']}, which is not rendered"]
        return external_secret_doc_problems(overlay_dir, ref["secretName"], sorted(keys), "the KFP launcher")
    problems = [f"Secret {ref['secretName']} lacks key {k} named by kfp-launcher" for k in sorted(keys - secret_keys(secret))]
    if secret.get("type", "Opaque") != "Opaque":
        problems.append(f"Secret {ref['secretName']} has type {secret.get('type')}, want Opaque")
    return problems


def _secret_values(secret: dict) -> dict[str, str]:
    values = dict(secret.get("stringData") or {})
    values.update({k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()})
    return values


def store_env_problems(objs: list[dict]) -> list[str]:
    """The Secret's AWS_ENDPOINT_URL(_S3) / AWS_REGION, which seedbed.store reads in every task,
    describe the store kfp-launcher describes (skipped where the Secret is not rendered)."""
    d = _providers_default(objs)
    secret = find(objs, "Secret", d["credentials"]["secretRef"]["secretName"])
    if secret is None:
        return []
    env = _secret_values(secret)
    name = f"Secret {secret['metadata']['name']}"
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


def pipeline_reference_problems(objs: list[dict], refs, overlay_dir: Path | None = None) -> list[str]:
    problems = []
    for pipeline, kind, name, keys in refs:
        obj = find(objs, kind, name)
        if obj is None:
            if kind == "Secret" and overlay_dir is not None and overlay_dir.name in EXTERNAL_SECRET_OVERLAYS:
                problems += external_secret_doc_problems(overlay_dir, name, keys, pipeline)
            else:
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
    problems = []
    if find(objs, "ServiceAccount", RUNNER) is None:
        problems.append(f"no ServiceAccount {RUNNER}")
    binding = find(objs, "RoleBinding", RUNNER)
    if binding is None:
        return problems + [f"no RoleBinding {RUNNER}"]
    ref = binding.get("roleRef", {})
    role = find(objs, "Role", ref.get("name")) if ref.get("kind") == "Role" else None
    if role is None or ref.get("apiGroup") != "rbac.authorization.k8s.io":
        return problems + [f"RoleBinding {RUNNER} refers to {ref}, which is not a rendered Role"]
    sa_subjects = {s.get("name") for s in binding.get("subjects") or [] if s.get("kind") == "ServiceAccount"}
    if RUNNER not in sa_subjects:
        problems.append(f"RoleBinding {RUNNER} does not bind ServiceAccount {RUNNER}")
    for s in binding.get("subjects") or []:
        if s.get("kind") == "ServiceAccount" and s.get("apiGroup"):
            problems.append(f"ServiceAccount subject {s.get('name')} must not set apiGroup")
    for verb in sorted(TRAINJOB_VERBS):
        if not role_allows(role, "trainer.kubeflow.org", "trainjobs", verb):
            problems.append(f"Role {role['metadata']['name']} does not allow {verb} trainer.kubeflow.org/trainjobs")
    if not role_allows(role, "", "configmaps", "get", LAUNCHER_CM):
        problems.append(f"Role cannot get ConfigMap {LAUNCHER_CM}")
    launcher = find(objs, "ConfigMap", LAUNCHER_CM)
    if launcher is not None:
        secret = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]["credentials"]["secretRef"]["secretName"]
        if not role_allows(role, "", "secrets", "get", secret):
            problems.append(f"Role cannot get Secret {secret}, which the launcher reads as the run's service account")
    return problems


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
    for s in (o for o in objs if o.get("kind") == "Secret"):
        for k, v in _secret_values(s).items():
            if _CREDENTIAL_KEY.search(k) and v not in ALLOWED_SECRET_VALUES:
                problems.append(
                    f"Secret {s['metadata']['name']}: {k} holds a value that is neither a placeholder nor a "
                    f"dev MinIO default; real credentials come from a sealed secret / External Secrets"
                )
    return problems


# ============================================================================= tests


def test_there_are_overlays():
    assert {"dev-minio", "aws"} <= set(OVERLAYS), OVERLAYS


@needs_kubectl
@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_every_object_matches_the_kubernetes_models(target):
    objs = render(BASE if target == "base" else MANIFESTS / "overlays" / target)
    assert objs
    problems = [p for o in objs for p in k8s_problems(o)]
    assert problems == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_are_labelled_unnamespaced_and_complete(overlay):
    objs = render(MANIFESTS / "overlays" / overlay)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {("ConfigMap", LAUNCHER_CM), ("ServiceAccount", RUNNER), ("Role", RUNNER), ("RoleBinding", RUNNER)} <= kinds
    for o in objs:
        meta = o["metadata"]
        assert meta.get("labels", {}).get(PART_OF[0]) == PART_OF[1], f"{o['kind']}/{meta['name']} lacks the seedbed label"
        # `kubectl apply -k ... -n NS` decides the namespace: a hard-coded one would fight it
        assert "namespace" not in meta, f"{o['kind']}/{meta['name']} hard-codes namespace {meta['namespace']}"
    assert PLACEHOLDER not in _render_text(str(MANIFESTS / "overlays" / overlay)), (
        f"overlay {overlay} leaves a {PLACEHOLDER} placeholder of the base unpatched"
    )


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kfp_launcher_config_is_what_the_launcher_reads(overlay):
    objs = render(MANIFESTS / "overlays" / overlay)
    assert launcher_problems(find(objs, "ConfigMap", LAUNCHER_CM)) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_launcher_secret_ref_resolves(overlay):
    objs = render(MANIFESTS / "overlays" / overlay)
    assert secret_ref_problems(objs, MANIFESTS / "overlays" / overlay) == []
    if overlay in EXTERNAL_SECRET_OVERLAYS:
        assert not [o for o in objs if o["kind"] == "Secret"], f"{overlay} must not render a Secret"


@needs_kubectl
def test_base_renders_the_secret_template_with_the_launcher_keys():
    objs = render(BASE)
    assert secret_ref_problems(objs) == []
    # the base's bucket is a placeholder (REPLACE_ME, which overlays must patch); the layout is real
    problems = launcher_problems(find(objs, "ConfigMap", LAUNCHER_CM))
    assert [p for p in problems if "defaultPipelineRoot" not in p] == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_task_environment_matches_launcher(overlay):
    assert store_env_problems(render(MANIFESTS / "overlays" / overlay)) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_compiled_pipelines_find_their_secrets_and_config_maps(overlay):
    refs = _pipeline_references()
    assert refs, "no compiled pipeline attaches a Secret or ConfigMap: how do tasks reach S3?"
    assert any(kind == "Secret" and name == S3_SECRET for _, kind, name, _ in refs), refs
    objs = render(MANIFESTS / "overlays" / overlay)
    assert pipeline_reference_problems(objs, refs, MANIFESTS / "overlays" / overlay) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_lets_runs_drive_trainjobs_and_read_the_secret(overlay):
    assert rbac_problems(render(MANIFESTS / "overlays" / overlay)) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_real_credentials_in_rendered_secrets(overlay):
    objs = render(MANIFESTS / "overlays" / overlay)
    assert secret_value_problems(objs) == []
    assert credential_problems(_render_text(str(MANIFESTS / "overlays" / overlay)), overlay) == []


def test_no_real_looking_credentials_in_committed_files():
    files = [p for p in MANIFESTS.rglob("*") if p.is_file()]
    files += [p for p in (REPO / "docs" / "deploy.md", REPO / "images" / "README.md") if p.is_file()]
    assert files
    problems = [q for p in files for q in credential_problems(p.read_text(), str(p.relative_to(REPO)))]
    assert problems == []


def test_dev_minio_overlay_targets_the_in_cluster_minio():
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the manifests")
    objs = render(MANIFESTS / "overlays" / "dev-minio")
    d = _providers_default(objs)
    assert d["endpoint"] == "minio-service.kubeflow:9000" and d["disableSSL"] is True and d["forcePathStyle"] is True


def test_aws_overlay_targets_aws_s3():
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the manifests")
    objs = render(MANIFESTS / "overlays" / "aws")
    d = _providers_default(objs)
    assert d["endpoint"] == "s3.amazonaws.com" and d["disableSSL"] is False
    assert re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", d["region"]), d["region"]


# ----------------------------------------------------------------------------- the checks can fail


@pytest.fixture
def dev():
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the manifests")
    return render(MANIFESTS / "overlays" / "dev-minio")


def _set_providers(objs, mutate):
    cm = find(objs, "ConfigMap", LAUNCHER_CM)
    p = yaml.safe_load(cm["data"]["providers"])
    mutate(p)
    cm["data"]["providers"] = yaml.safe_dump(p)
    return cm


def test_model_check_rejects_unknown_missing_and_mistyped_fields(dev):
    cm = copy.deepcopy(find(dev, "ConfigMap", LAUNCHER_CM))
    cm["date"] = cm.pop("data")  # typo of a top-level field
    assert any("unknown field" in p and ".date" in p for p in k8s_problems(cm))

    rb = copy.deepcopy(find(dev, "RoleBinding", RUNNER))
    del rb["roleRef"]["name"]
    assert any("roleRef.name" in p and "required" in p for p in k8s_problems(rb))

    role = copy.deepcopy(find(dev, "Role", RUNNER))
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")
    assert any(".verb:" in p for p in k8s_problems(role)) and any("verbs" in p and "required" in p for p in k8s_problems(role))

    secret = copy.deepcopy(find(dev, "Secret", "seedbed-s3"))
    secret["stringData"]["AWS_ACCESS_KEY_ID"] = 12345
    assert any("expected str" in p for p in k8s_problems(secret))
    secret = copy.deepcopy(find(dev, "Secret", "seedbed-s3"))
    secret["data"] = {"AWS_ACCESS_KEY_ID": "not base64!"}
    assert any("base64" in p for p in k8s_problems(secret))

    assert k8s_problems({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})


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

    def flat_layout(p):  # endpoint directly under s3: (no `default:`), an old layout the launcher ignores
        p["s3"] = p["s3"]["default"]

    assert launcher_problems(_set_providers(copy.deepcopy(dev), flat_layout))

    objs = copy.deepcopy(dev)
    find(objs, "ConfigMap", LAUNCHER_CM)["data"]["defaultPipelineRoot"] = "minio://mlpipeline/seedbed"
    assert any("defaultPipelineRoot" in x for x in launcher_problems(find(objs, "ConfigMap", LAUNCHER_CM)))


def test_secret_ref_check_catches_a_wrong_key_name(dev):
    objs = copy.deepcopy(dev)
    _set_providers(objs, lambda p: p["s3"]["default"]["credentials"]["secretRef"].update(accessKeyKey="AWS_ACCESS_KEY"))
    assert any("AWS_ACCESS_KEY" in x for x in secret_ref_problems(objs))

    objs = copy.deepcopy(dev)
    _set_providers(objs, lambda p: p["s3"]["default"]["credentials"]["secretRef"].update(secretName="other"))
    assert secret_ref_problems(objs)
    # dropping the Secret is only allowed for the overlays that document an external one
    objs = [o for o in copy.deepcopy(dev) if o["kind"] != "Secret"]
    assert secret_ref_problems(objs, MANIFESTS / "overlays" / "dev-minio")


def test_env_check_catches_a_different_store(dev):
    for key, value in [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ENDPOINT_URL", "https://minio-service.kubeflow:9000"),
        ("AWS_ENDPOINT_URL", "http://minio.other:9000"),
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


def test_pipeline_reference_check_catches_missing_keys_and_objects(dev):
    refs = (("p", "Secret", S3_SECRET, ("AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")),)
    assert any("AWS_SESSION_TOKEN" in p for p in pipeline_reference_problems(dev, refs))
    refs = (("p", "ConfigMap", "seedbed-extra", ("X",)),)
    assert pipeline_reference_problems(dev, refs)
    # an external Secret must be documented with every key the pipelines read
    aws = MANIFESTS / "overlays" / "aws"
    no_secret = [o for o in dev if o["kind"] != "Secret"]
    assert pipeline_reference_problems(no_secret, (("p", "Secret", S3_SECRET, ("AWS_SESSION_TOKEN",)),), aws)
    assert pipeline_reference_problems(no_secret, (("p", "Secret", S3_SECRET, ("AWS_REGION",)),), MANIFESTS / "overlays" / "dev-minio")


def test_rbac_check_catches_missing_grants(dev):
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


def test_credential_checks_catch_real_looking_keys(dev):
    # assembled at run time so that this file itself holds no key-shaped literal
    key_id = "AKIA" + "Q3EXAMPLE7QZ4XW2YV"[:16]
    secret = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCY3XAMPLEKEY"
    assert credential_problems(f"AWS_ACCESS_KEY_ID: {key_id}", "x")
    assert credential_problems(f"AWS_SECRET_ACCESS_KEY: {secret}", "x")
    objs = copy.deepcopy(dev)
    find(objs, "Secret", "seedbed-s3")["stringData"]["AWS_SECRET_ACCESS_KEY"] = "hunter2hunter2"
    assert secret_value_problems(objs)
