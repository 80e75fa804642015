"""Bad input to the main job fails fast, with one clear line, exit code 2 and nothing written."""

from __future__ import annotations

import gzip
import socket

import pytest
from click.testing import CliRunner

from seedbed.cli import main


def _run(tiny, work, *args):
    res = CliRunner().invoke(
        main,
        ["run", "betr-select", "--work", str(work), "--pool", str(tiny / "pool_tiny.jsonl.gz"),
         "--benchmarks", str(tiny / "benchmarks_tiny.jsonl.gz"), *args],
    )
    return res


def _error(res) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    line = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert line, res.output
    return line[-1]


@pytest.mark.parametrize("rate", ["0", "-5", "101", "nan"])
def test_keep_rate_outside_range(tiny, tmp_path, rate):
    assert "keep" in _error(_run(tiny, tmp_path / "w", "--keep-rate", rate))
    assert not (tmp_path / "w" / "kfp").exists()


def test_unknown_benchmark_lists_known_names(tiny, tmp_path):
    msg = _error(_run(tiny, tmp_path / "w", "--target-set", "arc_easy,no_such_bench"))
    assert "no_such_bench" in msg and "arc_challenge" in msg and "gsm8k" in msg


def test_empty_pool_and_empty_targets(tiny, tmp_path):
    empty = tmp_path / "empty.jsonl.gz"
    empty.write_bytes(gzip.compress(b""))
    assert "no usable documents" in _error(_run(tiny, tmp_path / "w", "--pool", str(empty)))
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"id": 1}\n\xff\xfe\n{broken\n'))  # every line malformed
    assert "no usable documents" in _error(_run(tiny, tmp_path / "w", "--pool", str(bad)))
    assert "benchmark" in _error(_run(tiny, tmp_path / "w", "--benchmarks", str(empty)))
    assert "missing.jsonl.gz does not exist" in _error(_run(tiny, tmp_path / "w", "--pool", str(tmp_path / "missing.jsonl.gz")))


def test_bad_pipeline_parameter(tiny, tmp_path):
    assert "unknown pipeline parameter" in _error(_run(tiny, tmp_path / "w", "-p", "nope=1"))
    assert "not a valid int" in _error(_run(tiny, tmp_path / "w", "-p", "top_k=many"))


def test_object_store_problems(tiny, s3, monkeypatch, tmp_path):
    assert "bucket 'no-such-bucket-q' does not exist" in _error(_run(tiny, "s3://no-such-bucket-q/run"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SEEDBED_S3_CONNECT_TIMEOUT", "1")
    assert "unreachable" in _error(_run(tiny, f"s3://{s3}/run"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert "no S3 credentials" in _error(_run(tiny, f"s3://{s3}/run"))
