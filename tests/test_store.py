"""seedbed.store against a real S3 endpoint over HTTP (moto's server on 127.0.0.1) and local disk."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import urllib.request

import boto3
import pytest

from seedbed import store


def _boto(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_roundtrip_bytes_json_and_listing(where, tmp_path, s3):
    base = str(tmp_path / "root") if where == "local" else f"s3://{s3}/root"
    store.write_bytes(store.join(base, "a/b.bin"), b"\x00\x01payload")
    store.write_json(store.join(base, "a/c.json"), {"x": [1, 2]})
    assert store.read_bytes(store.join(base, "a/b.bin")) == b"\x00\x01payload"
    assert store.read_json(store.join(base, "a/c.json")) == {"x": [1, 2]}
    assert store.exists(store.join(base, "a/b.bin"))
    assert not store.exists(store.join(base, "a/missing.bin"))
    assert store.size(store.join(base, "a/b.bin")) == 9
    assert store.list_uris(base) == [store.join(base, "a/b.bin"), store.join(base, "a/c.json")]
    assert store.list_uris(base, suffixes=(".json",)) == [store.join(base, "a/c.json")]
    with pytest.raises(store.NotFound):
        store.read_bytes(store.join(base, "nope"))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_failed_write_leaves_nothing(where, tmp_path, s3):
    base = str(tmp_path) if where == "local" else f"s3://{s3}"
    uri = store.join(base, "out/obj.bin")
    store.write_bytes(uri, b"old complete version")
    with pytest.raises(RuntimeError, match="boom"):
        with store.open_write(uri) as f:
            f.write(b"half of the new vers")
            raise RuntimeError("boom")
    # the previous complete object is untouched, and no temporary file is visible
    assert store.read_bytes(uri) == b"old complete version"
    assert store.list_uris(store.join(base, "out")) == [uri]
    if where == "local":
        assert sorted(os.listdir(tmp_path / "out")) == ["obj.bin"]


def test_multipart_object_larger_than_one_part(s3, s3_server, monkeypatch):
    # S3's minimum part is 5 MiB: 12 MiB at a 5 MiB threshold is a 3-part upload
    monkeypatch.setenv("SEEDBED_S3_MULTIPART_THRESHOLD", str(5 * 2**20))
    monkeypatch.setenv("SEEDBED_S3_MULTIPART_CHUNKSIZE", str(5 * 2**20))
    data = os.urandom(12 * 2**20 + 123)
    uri = f"s3://{s3}/big/blob.bin"
    with store.open_write(uri, spool_bytes=1 << 20) as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i : i + (1 << 20)])
    head = _boto(s3_server).head_object(Bucket=s3, Key="big/blob.bin")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # really multipart
    assert store.size(uri) == len(data)
    assert store.read_bytes(uri) == data
    local = store.copy_to_local(uri)
    assert local.read_bytes() == data


def test_listing_many_keys_crosses_pages(s3, s3_server):
    client = _boto(s3_server)
    keys = [f"many/k{i:05d}.jsonl" for i in range(1105)]  # > 1000: two list pages
    for k in keys:
        client.put_object(Bucket=s3, Key=k, Body=b"{}\n")
    client.put_object(Bucket=s3, Key="many-other/x.jsonl", Body=b"{}\n")  # same string prefix, other "dir"
    listed = store.list_uris(f"s3://{s3}/many")
    assert listed == [f"s3://{s3}/{k}" for k in keys]
    assert store.delete_prefix(f"s3://{s3}/many") == 1105
    assert not store.exists_prefix(f"s3://{s3}/many")
    assert store.exists(f"s3://{s3}/many-other/x.jsonl")


def test_missing_bucket_is_a_clear_error(s3):
    for call in (
        lambda: store.read_bytes("s3://no-such-bucket-x/a"),
        lambda: store.write_bytes("s3://no-such-bucket-x/a", b"x"),
        lambda: store.list_uris("s3://no-such-bucket-x/p"),
        lambda: store.exists("s3://no-such-bucket-x/a"),
    ):
        with pytest.raises(store.StoreError, match="bucket 'no-such-bucket-x' does not exist"):
            call()


def test_missing_credentials_is_a_clear_error(s3, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(store.StoreError, match="no S3 credentials"):
        store.read_bytes(f"s3://{s3}/a")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_a_clear_error(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("SEEDBED_S3_CONNECT_TIMEOUT", "1")
    with pytest.raises(store.StoreError, match="S3 endpoint unreachable"):
        store.write_bytes(f"s3://{s3}/a", b"x")


class _FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the moto server but answers the first `failures` requests with 503."""

    protocol_version = "HTTP/1.1"  # answers botocore's Expect: 100-continue
    upstream = ""
    failures = 0
    seen = 0
    lock = threading.Lock()

    def _handle(self):
        with self.lock:
            type(self).seen += 1
            fail = type(self).seen <= type(self).failures
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if fail:
            msg = b"<Error><Code>SlowDown</Code><Message>busy</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        req = urllib.request.Request(self.upstream + self.path, data=body or None, method=self.command)
        for k, v in self.headers.items():
            if k.lower() not in ("host", "content-length", "expect"):
                req.add_header(k, v)
        req.add_header("Host", self.headers["Host"])
        if "Content-Type" not in self.headers:  # else urllib says form-urlencoded and the body is lost
            req.add_header("Content-Type", "binary/octet-stream")
        try:
            resp = urllib.request.urlopen(req)
            status, headers, data = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, data = e.code, e.headers, e.read()
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    def log_message(self, *args):
        pass


def test_transient_errors_are_retried(s3, s3_server, monkeypatch):
    _FlakyProxy.upstream, _FlakyProxy.failures, _FlakyProxy.seen = s3_server, 2, 0
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
        store.write_bytes(f"s3://{s3}/retried.txt", b"made it")  # 503, 503, then 200
        assert _FlakyProxy.seen >= 3
        assert store.read_bytes(f"s3://{s3}/retried.txt") == b"made it"
        # with fewer attempts than failures the error surfaces, naming the S3 error
        _FlakyProxy.failures, _FlakyProxy.seen = 5, 0
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        with pytest.raises(store.StoreError, match="SlowDown|503"):
            store.write_bytes(f"s3://{s3}/never.txt", b"x")
    finally:
        proxy.shutdown()


def test_malformed_s3_uri():
    with pytest.raises(store.StoreError, match="malformed S3 URI"):
        store.read_bytes("s3:///key-without-bucket")
