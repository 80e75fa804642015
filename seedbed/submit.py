"""Submit compiled pipelines to Kubeflow Pipelines through its REST API (v2beta1); no kfp import.

``seedbed submit`` and ``seedbed schedule`` use it: find or create the experiment and the
pipeline, upload the compiled YAML as a pipeline version named by the git commit (reused when
that exact version exists), then start a run or a recurring run, and optionally wait for the run.
KFP caches per task, as compiled: a pipeline *version* carries no run-level switch, so
:func:`cached_tasks` checks that every task of the YAML has caching off before it is uploaded.

Authentication: ``Authorization: Bearer`` with ``KFP_TOKEN`` when set, else (in a pod) the
KFP-audience token KFP's own client reads, else the pod's service-account token.

Why urllib and not ``kfp_server_api`` (the generated v2beta1 client kfp installs, which is not
``kfp``): its upload reads the YAML from a file path (a temp file per upload), every request and
reply is a model object to build and convert, its ``ApiException`` carries the raw grpc-gateway
body, and a rotated pod token needs a Configuration refresh hook; the glue would outgrow
:meth:`Client.call`, the one place here that speaks HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

API = "/apis/v2beta1"
TOKEN_FILES = ("/var/run/secrets/kubeflow/pipelines/token", "/var/run/secrets/kubernetes.io/serviceaccount/token")
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
SUCCEEDED = {"SUCCEEDED", "SKIPPED"}
FAILED = {"FAILED", "CANCELED"}


class KfpError(ValueError):
    """The KFP API cannot be reached or refused a request; the message carries the server's."""


class RunFailed(RuntimeError):
    """A run ended FAILED or CANCELED, or was still going when the wait timed out."""


def default_token() -> str | None:
    """``KFP_TOKEN``, else the first token file that exists (``KF_PIPELINES_SA_TOKEN_PATH``, TOKEN_FILES)."""
    if os.environ.get("KFP_TOKEN"):
        return os.environ["KFP_TOKEN"].strip()
    for path in (os.environ.get("KF_PIPELINES_SA_TOKEN_PATH"), *TOKEN_FILES):
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
    return None


def version_name(yaml_text: str, repo: str | Path) -> str:
    """``<commit, 12 hex>-<sha256 of the YAML, 8 hex>``: the commit names the code; the hash keeps a
    YAML compiled differently from the same commit (platform file, images, local edits) apart."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise ValueError(f"{repo} is not a git checkout: name the pipeline version with --version-name") from None
    return f"{sha[:12]}-{hashlib.sha256(yaml_text.encode()).hexdigest()[:8]}"


def cached_tasks(yaml_text: str) -> list[str]:
    """Tasks (at any DAG level) of a compiled pipeline whose KFP caching is on."""
    import yaml

    spec = next(yaml.safe_load_all(yaml_text))
    dags = [spec["root"]] + list(spec.get("components", {}).values())
    return sorted(name for d in dags for name, t in d.get("dag", {}).get("tasks", {}).items()
                  if t.get("cachingOptions", {}).get("enableCache"))


def _one(items: list[dict], name: str, what: str) -> dict | None:
    """The item named ``name`` (the server may ignore a filter), or None."""
    hits = [i for i in items or [] if name in (i.get("display_name"), i.get("name"))]
    if len(hits) > 1:
        raise KfpError(f"{len(hits)} {what}s are named {name!r}; names must be unique")
    return hits[0] if hits else None


class Client:
    """The handful of KFP v2beta1 endpoints seedbed needs. ``token`` None: :func:`default_token` at
    each request (a pod's projected token is rotated)."""

    def __init__(self, host: str, token: str | None = None, namespace: str | None = None, timeout_s: float = 60):
        if not host.startswith(("http://", "https://")):
            raise ValueError(f"--host {host!r}: expected the KFP API URL, e.g. http://localhost:8080")
        self.host, self.token, self.namespace, self.timeout_s = host.rstrip("/"), token, namespace, timeout_s

    def call(self, method: str, path: str, *, query: dict | None = None, body: dict | None = None,
             upload: tuple[str, bytes] | None = None) -> dict:
        url = self.host + API + path + ("?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
                                        if query else "")
        headers = {"Accept": "application/json"}
        token = self.token or default_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif upload is not None:
            boundary = uuid.uuid4().hex
            data = (f'--{boundary}\r\nContent-Disposition: form-data; name="uploadfile"; filename="{upload[0]}"\r\n'
                    "Content-Type: application/x-yaml\r\n\r\n").encode() + upload[1] + f"\r\n--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:  # grpc-gateway errors: {"code", "message", "details"} (older servers: "error")
                err = json.loads(text)
                text = err.get("message") or err.get("error") or text
            except (ValueError, AttributeError):
                pass
            raise KfpError(f"KFP {method} {path}: HTTP {e.code}: {text.strip()[:2000]}") from None
        except (urllib.error.URLError, OSError) as e:
            raise KfpError(f"cannot reach KFP at {self.host}: {getattr(e, 'reason', e)}") from None
        return json.loads(raw) if raw.strip() else {}

    def _find(self, path: str, key: str, name: str, what: str, **query) -> dict | None:
        flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
        return _one(self.call("GET", path, query={"filter": flt, "page_size": 100, **query}).get(key), name, what)

    def check(self) -> dict:
        """Health check; in multi-user KFP the namespace is required (else this pod's)."""
        health = self.call("GET", "/healthz")
        if health.get("multi_user") and not self.namespace:
            if not Path(NAMESPACE_FILE).is_file():
                raise ValueError(f"KFP at {self.host} is multi-user: pass --namespace (your profile namespace)")
            self.namespace = Path(NAMESPACE_FILE).read_text().strip()
        return health

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        found = self._find("/experiments", "experiments", name, "experiment", namespace=self.namespace)
        if found is None:
            found = self.call("POST", "/experiments", body={"display_name": name, "namespace": self.namespace or ""})
        return found["experiment_id"]

    def pipeline(self, name: str, description: str = "") -> tuple[str, bool]:
        """(id, created) of pipeline ``name``, created (with no version yet) when missing."""
        found = self._find("/pipelines", "pipelines", name, "pipeline")
        if found is not None:
            return found["pipeline_id"], False
        made = self.call("POST", "/pipelines", body={"name": name, "display_name": name, "description": description})
        return made["pipeline_id"], True

    def version(self, pipeline_id: str, name: str, yaml_text: str, filename: str) -> tuple[str, bool]:
        """(id, uploaded) of version ``name`` of the pipeline: reused when it exists, else uploaded."""
        found = self._find(f"/pipelines/{pipeline_id}/versions", "pipeline_versions", name, "pipeline version")
        if found is not None:
            return found["pipeline_version_id"], False
        made = self.call("POST", "/pipelines/upload_version", upload=(filename, yaml_text.encode()),
                         query={"name": name, "display_name": name, "pipelineid": pipeline_id})
        return made["pipeline_version_id"], True

    def create_run(self, job: dict) -> dict:
        return self.call("POST", "/runs", body=job)

    def create_recurring_run(self, job: dict, trigger: dict, max_concurrency: int = 1) -> dict:
        """A recurring run of ``job`` on ``trigger`` (see :func:`trigger`), enabled, without catch-up."""
        body = {**job, "trigger": trigger, "max_concurrency": str(max_concurrency), "mode": "ENABLE", "no_catchup": True}
        return self.call("POST", "/recurringruns", body=body)

    def run_url(self, run_id: str) -> str:
        return f"{self.host}/#/runs/details/{run_id}"

    def wait(self, run_id: str, timeout_s: float = 0, poll_s: float = 15, on_state=None) -> dict:
        """Poll the run until it ends; :class:`RunFailed` unless it SUCCEEDED (or was SKIPPED)."""
        start, last, errors = time.monotonic(), None, 0
        while True:
            try:
                run = self.call("GET", f"/runs/{run_id}")
                errors = 0
            except KfpError:  # a blip of hours-long polling; five in a row end it
                errors += 1
                if errors >= 5:
                    raise
                time.sleep(poll_s)
                continue
            state = run.get("state") or "PENDING"
            if state != last and on_state:
                on_state(state)
            last = state
            if state in SUCCEEDED:
                return run
            if state in FAILED:
                raise RunFailed(failure_report(run, self.run_url(run_id), self.namespace))
            if timeout_s and time.monotonic() - start > timeout_s:
                raise RunFailed(f"run {run_id} is still {state} after {timeout_s:.0f} s (it goes on): "
                                f"{self.run_url(run_id)}")
            time.sleep(poll_s)


def job(display_name: str, experiment_id: str, pipeline_id: str, version_id: str, params: dict,
        service_account: str = "") -> dict:
    """The body of a run or recurring run of one pipeline version ("" service account: KFP's default)."""
    return {"display_name": display_name, "experiment_id": experiment_id,
            "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
            "runtime_config": {"parameters": params}, "service_account": service_account}


def trigger(cron: str = "", every_s: int = 0) -> dict:
    """A recurring run's trigger: a 6-field cron (seconds first) or every ``every_s`` seconds."""
    if bool(cron) == bool(every_s):
        raise ValueError("give exactly one of --cron and --every")
    if cron and len(cron.split()) != 6:
        raise ValueError(f"--cron {cron!r}: KFP cron expressions have 6 fields, seconds first "
                         "(e.g. '0 0 3 * * *' is 03:00 every day)")
    if every_s and every_s < 60:
        raise ValueError(f"--every {every_s}: at least 60 seconds")
    return {"cron_schedule": {"cron": cron}} if cron else {"periodic_schedule": {"interval_second": str(every_s)}}


def failure_report(run: dict, url: str, namespace: str | None = None) -> str:
    """The run's error and each failed task's error and pod, for the terminal."""
    lines = [f"run {run.get('run_id')} {run.get('state')}: {(run.get('error') or {}).get('message') or 'no error message'}"]
    for t in (run.get("run_details") or {}).get("task_details") or []:
        if t.get("state") == "FAILED":
            msg = (t.get("error") or {}).get("message", "")
            ns = f" -n {namespace}" if namespace else ""
            pod = f" (logs: kubectl logs{ns} {t['pod_name']} -c main)" if t.get("pod_name") else ""
            lines.append(f"  task {t.get('display_name')!r} failed{pod}{': ' + msg if msg else ''}")
    return "\n".join(lines + [f"  {url}"])
