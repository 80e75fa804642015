"""`seedbed submit` / `seedbed schedule` against a KFP v2beta1 API served on 127.0.0.1.

The fake server implements the endpoints the client calls (healthz, experiments, pipelines,
pipeline versions with a multipart upload, runs, recurring runs), keeps their objects, and
records every request, so the tests assert what a real KFP would have received.
"""

from __future__ import annotations

import email
import hashlib
import json
import re
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from seedbed.cli import main

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train-lm", "work_uri=s3://bucket/runs/t1", 'domains_json={"web": "s3://bucket/web/"}',
         'run_settings={"preset": "tiny-64"}', "vocab_size=4096", "nodes=2", "eval_limit=50"]


class FakeKfp(ThreadingHTTPServer):
    def __init__(self, token: str | None = "t0ken"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.token, self.multi_user = token, False
        self.requests: list[dict] = []
        self.store = {k: {} for k in ("experiments", "pipelines", "pipeline_versions", "runs", "recurringruns")}
        self.final = {"state": "SUCCEEDED"}  # what GET /runs/{id} says after its first RUNNING

    def posts(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == "/apis/v2beta1" + path]

    def add(self, kind: str, obj: dict) -> dict:
        key = {"experiments": "experiment_id", "pipelines": "pipeline_id", "pipeline_versions": "pipeline_version_id",
               "runs": "run_id", "recurringruns": "recurring_run_id"}[kind]
        obj[key] = f"{kind[:3]}-{len(self.store[kind]) + 1}"
        self.store[kind][obj[key]] = obj
        return obj


class _Handler(BaseHTTPRequestHandler):
    server: FakeKfp

    def log_message(self, *args):
        pass

    def _reply(self, code: int, obj: dict):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, grpc: int, message: str):
        self._reply(code, {"error": message, "code": grpc, "message": message, "details": []})

    def _handle(self, method: str):
        srv = self.server
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        srv.requests.append({"method": method, "path": url.path, "query": query, "headers": dict(self.headers),
                             "body": body})
        if srv.token and self.headers.get("Authorization") != f"Bearer {srv.token}":
            return self._error(401, 16, "Unauthenticated: the bearer token is missing or not valid")
        path = url.path.removeprefix("/apis/v2beta1")
        listing = {"/experiments": "experiments", "/pipelines": "pipelines"}.get(path)
        m = re.fullmatch(r"/pipelines/([^/]+)/versions", path)
        if method == "GET" and path == "/healthz":
            return self._reply(200, {"multi_user": srv.multi_user, "pipeline_store": "database"})
        if method == "GET" and (listing or m):
            kind = listing or "pipeline_versions"
            name = json.loads(query["filter"])["predicates"][0]["stringValue"]
            hits = [o for o in srv.store[kind].values() if o["display_name"] == name
                    and (not m or o["pipeline_id"] == m.group(1))
                    and (kind != "experiments" or o.get("namespace", "") == query.get("namespace", ""))]
            return self._reply(200, {kind: hits, "total_size": len(hits)} if hits else {})
        if method == "POST" and path in ("/experiments", "/pipelines"):
            return self._reply(200, srv.add(path[1:], json.loads(body)))
        if method == "POST" and path == "/pipelines/upload_version":
            msg = email.message_from_bytes(f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
            part = msg.get_payload()[0]
            if part.get_param("name", header="content-disposition") != "uploadfile" or \
                    not part.get_filename().endswith(".yaml"):
                return self._error(400, 3, "expected a .yaml file in the form field uploadfile")
            if query["pipelineid"] not in srv.store["pipelines"]:
                return self._error(404, 5, f"pipeline {query['pipelineid']} not found")
            return self._reply(200, srv.add("pipeline_versions", {
                "display_name": query["display_name"], "name": query["name"], "pipeline_id": query["pipelineid"],
                "yaml": part.get_payload(decode=True).decode()}))
        if method == "POST" and path in ("/runs", "/recurringruns"):
            obj = json.loads(body)
            if obj["pipeline_version_reference"]["pipeline_version_id"] not in srv.store["pipeline_versions"]:
                return self._error(404, 5, "pipeline version not found")
            return self._reply(200, srv.add(path[1:], {**obj, "state": "PENDING", "polls": 0}))
        m = re.fullmatch(r"/runs/([^/]+)", path)
        if method == "GET" and m and m.group(1) in srv.store["runs"]:
            run = srv.store["runs"][m.group(1)]
            run["polls"] += 1
            return self._reply(200, {**run, **(srv.final if run["polls"] > 1 else {"state": "RUNNING"})})
        return self._error(404, 5, f"no route {method} {url.path}")

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


@pytest.fixture
def kfp(monkeypatch, tmp_path):
    srv = FakeKfp()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("KFP_TOKEN", "t0ken")
    for var in ("KFP_HOST", "KFP_NAMESPACE", "SEEDBED_PLATFORM", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("seedbed.submit.TOKEN_FILES", ())
    monkeypatch.setattr("seedbed.submit.NAMESPACE_FILE", str(tmp_path / "no-namespace"))
    yield srv
    srv.shutdown()
    srv.server_close()


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def compiled_train_lm(tmp_path_factory) -> str:
    from pipelines.compile import compile_all

    return compile_all(tmp_path_factory.mktemp("yaml"), ["train-lm"])[0].read_text()


def test_submit_uploads_a_version_named_by_the_commit_and_starts_an_uncached_run(kfp, compiled_train_lm):
    res = cli("submit", "--host", kfp.url, "--experiment", "nightly", *TRAIN, "--wait", "--poll", "0.05")
    assert res.exit_code == 0, res.output + res.stderr
    calls = [(r["method"], r["path"].removeprefix("/apis/v2beta1")) for r in kfp.requests]
    assert calls == [("GET", "/healthz"), ("GET", "/experiments"), ("POST", "/experiments"), ("GET", "/pipelines"),
                     ("POST", "/pipelines"), ("GET", "/pipelines/pip-1/versions"),
                     ("POST", "/pipelines/upload_version"), ("POST", "/runs"), ("GET", "/runs/run-1"),
                     ("GET", "/runs/run-1")]
    assert all(r["headers"]["Authorization"] == "Bearer t0ken" for r in kfp.requests)
    assert json.loads(kfp.posts("/experiments")[0]["body"])["display_name"] == "nightly"
    assert json.loads(kfp.posts("/pipelines")[0]["body"])["display_name"] == "train-lm"

    # the upload: the compiled YAML itself, every task with caching off, as version <commit>-<YAML hash>
    version = kfp.store["pipeline_versions"]["pip-1"]
    assert version["yaml"] == compiled_train_lm
    spec = next(yaml.safe_load_all(version["yaml"]))
    tasks = [t for c in [spec["root"], *spec["components"].values()] for t in c.get("dag", {}).get("tasks", {}).values()]
    assert len(tasks) == 4 and all(t["cachingOptions"].get("enableCache") is not True for t in tasks)
    sha, digest = version["name"].split("-")
    head = subprocess.run(["git", "rev-parse", sha + "^{commit}"], cwd=REPO, capture_output=True, text=True)
    assert len(sha) == 12 and head.returncode == 0 and head.stdout.startswith(sha)
    assert digest == hashlib.sha256(compiled_train_lm.encode()).hexdigest()[:8]
    assert version["display_name"] == version["name"] and version["pipeline_id"] == "pip-1"

    # the run: that version, the parameters typed by the pipeline signature, in the experiment
    run = json.loads(kfp.posts("/runs")[0]["body"])
    assert run["pipeline_version_reference"] == {"pipeline_id": "pip-1", "pipeline_version_id": "pip-1"}
    assert run["experiment_id"] == "exp-1" and run["display_name"].startswith(f"train-lm {version['name']} ")
    assert run["runtime_config"]["parameters"] == {
        "work_uri": "s3://bucket/runs/t1", "domains_json": '{"web": "s3://bucket/web/"}',
        "run_settings": '{"preset": "tiny-64"}', "vocab_size": 4096, "nodes": 2, "eval_limit": 50}
    assert "run run-1: " + kfp.url + "/#/runs/details/run-1" in res.output
    assert "RUNNING" in res.stderr and "SUCCEEDED" in res.stderr

    # again from the same commit: experiment, pipeline and version are found, not re-created
    n = len(kfp.requests)
    res = cli("submit", "--host", kfp.url, "--experiment", "nightly", *TRAIN)
    assert res.exit_code == 0, res.output + res.stderr
    posts = [r["path"].removeprefix("/apis/v2beta1") for r in kfp.requests[n:] if r["method"] == "POST"]
    assert posts == ["/runs"] and "exists" in res.stderr
    assert json.loads(kfp.posts("/runs")[1]["body"])["pipeline_version_reference"]["pipeline_version_id"] == "pip-1"


def test_wait_exits_1_with_the_run_error_and_the_failed_task(kfp):
    kfp.final = {"state": "FAILED", "error": {"code": 9, "message": "1 of 4 tasks failed"},
                 "run_details": {"task_details": [
                     {"display_name": "tokenize domains", "state": "SUCCEEDED", "pod_name": "p-1"},
                     {"display_name": "train (DeepSpeed)", "state": "FAILED", "pod_name": "train-lm-x-launch-2",
                      "error": {"message": "TrainJob tj-1 failed: OOMKilled"}}]}}
    res = cli("submit", "--host", kfp.url, "--namespace", "team-a", *TRAIN, "--wait", "--poll", "0.05")
    assert res.exit_code == 1, res.output + res.stderr
    assert "FAILED: 1 of 4 tasks failed" in res.stderr
    assert "'train (DeepSpeed)' failed" in res.stderr and "OOMKilled" in res.stderr
    assert "kubectl logs -n team-a train-lm-x-launch-2 -c main" in res.stderr and "tokenize" not in res.stderr
    kfp.final = {"state": "CANCELED"}
    assert cli("submit", "--host", kfp.url, *TRAIN, "--wait", "--poll", "0.05").exit_code == 1
    kfp.final = {"state": "RUNNING"}
    res = cli("submit", "--host", kfp.url, *TRAIN, "--wait", "--poll", "0.05", "--timeout", "1")
    assert res.exit_code == 1 and "still RUNNING after 1 s" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["nope", "work_uri=x"], "unknown pipeline 'nope'"),
    ([*TRAIN, "vocab_size"], "'vocab_size': expected KEY=VALUE"),
    ([*TRAIN, "vocab_sise=5"], "unknown pipeline parameter 'vocab_sise'"),
    ([*TRAIN, "nodes=two"], "nodes='two' is not a valid int"),
    (["train-lm", "work_uri=s3://b/w"], "missing required pipeline parameter(s) ['domains_json', 'run_settings']"),
])
def test_bad_input_fails_before_any_request(kfp, args, message):
    res = cli("submit", "--host", kfp.url, *args)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert kfp.requests == []


def test_unreachable_host_and_server_errors_exit_2_with_the_message(kfp, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = cli("submit", "--host", f"http://127.0.0.1:{port}", *TRAIN)
    assert res.exit_code == 2 and f"cannot reach KFP at http://127.0.0.1:{port}" in res.stderr
    monkeypatch.setenv("KFP_TOKEN", "wrong")
    res = cli("submit", "--host", kfp.url, *TRAIN)
    assert res.exit_code == 2 and "HTTP 401: Unauthenticated: the bearer token is missing" in res.stderr
    monkeypatch.setenv("KFP_TOKEN", "t0ken")
    kfp.multi_user = True
    res = cli("submit", "--host", kfp.url, *TRAIN)
    assert res.exit_code == 2 and "multi-user: pass --namespace" in res.stderr


def test_schedule_creates_a_recurring_run_with_the_in_cluster_token(kfp, monkeypatch, tmp_path):
    monkeypatch.delenv("KFP_TOKEN")
    (tmp_path / "token").write_text("t0ken\n")
    monkeypatch.setattr("seedbed.submit.TOKEN_FILES", (str(tmp_path / "absent"), str(tmp_path / "token")))
    kfp.multi_user = True
    res = cli("schedule", "--host", kfp.url, "--namespace", "team-a", "--cron", "0 0 3 * * *", *TRAIN)
    assert res.exit_code == 0, res.output + res.stderr
    assert all(r["headers"]["Authorization"] == "Bearer t0ken" for r in kfp.requests)
    assert kfp.requests[1]["query"]["namespace"] == "team-a"
    assert json.loads(kfp.posts("/experiments")[0]["body"]) == {"display_name": "seedbed", "namespace": "team-a"}
    rec = json.loads(kfp.posts("/recurringruns")[0]["body"])
    assert rec["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert rec["mode"] == "ENABLE" and rec["max_concurrency"] == "1" and rec["no_catchup"] is True
    assert rec["pipeline_version_reference"] == {"pipeline_id": "pip-1", "pipeline_version_id": "pip-1"}
    assert rec["runtime_config"]["parameters"]["vocab_size"] == 4096
    assert f"recurring run rec-1: {kfp.url}/#/recurringrun/details/rec-1" in res.output

    n = len(kfp.requests)
    for bad, message in ((["--cron", "0 3 * * *"], "6 fields, seconds first"), ([], "exactly one of --cron and --every"),
                         (["--every", "5"], "at least 60 seconds")):
        res = cli("schedule", "--host", kfp.url, "--namespace", "team-a", *bad, *TRAIN)
        assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert len(kfp.requests) == n  # refused before anything was uploaded


def test_submit_curate_and_grow_from_a_job_config(kfp):
    res = cli("submit", "--host", kfp.url, "--config", str(REPO / "configs" / "cluster.yaml"), "curate-and-grow",
              "keep_rate=3")
    assert res.exit_code == 0, res.output + res.stderr
    params = json.loads(kfp.posts("/runs")[0]["body"])["runtime_config"]["parameters"]
    assert params["work_uri"] == "s3://my-bucket/seedbed/runs/curate-and-grow-2026-11"
    assert params["series"] == "1b,2b,4b,8b" and params["keep_rate"] == 3.0  # KEY=VALUE overrides the file
    assert params["optimize_preset"] == "8b" and params["optimize_tokens"] > 0  # h* for the series' last model
    assert json.loads(params["domains_json"])["code"] == "s3://my-bucket/domains/code/"
    res = cli("submit", "--host", kfp.url, "--config", str(REPO / "configs" / "cluster.yaml"), "train-lm")
    assert res.exit_code == 2 and "describes a curate-and-grow run" in res.stderr
