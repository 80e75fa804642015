"""Shared fixtures: real data paths and a real S3 endpoint (moto's server) on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEEDBED_DATA", REPO.parent / "shared" / "data"))
TINY = SHARED_DATA / "tiny"

# botocore must never try the EC2 metadata service (a non-loopback address) during tests
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def read_jsonl(path, n: int | None = None) -> list[dict]:
    """The first ``n`` (all) JSON records of a .jsonl(.gz) file, raw: test input, any schema."""
    import gzip
    import itertools

    import orjson

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return [orjson.loads(line) for line in itertools.islice((l for l in f if l.strip()), n)]


@pytest.fixture(scope="session")
def tiny() -> Path:
    assert TINY.is_dir(), f"the tiny test data is missing at {TINY} (set SEEDBED_DATA)"
    return TINY


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the shared data is missing at {SHARED_DATA} (set SEEDBED_DATA)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_server():
    """moto's ThreadedMotoServer: real S3 over HTTP on 127.0.0.1 (a free port)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """Environment pointing seedbed.store at the moto server; yields a fresh bucket name."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    bucket = f"seedbed-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield bucket


#: small and quick, still a real fastText model
FAST_FASTTEXT = {"bucket": 20_000, "dim": 32, "lr": 0.2, "epoch": 20}


@pytest.fixture(scope="session")
def domain_classifier_uri(tmp_path_factory, tiny) -> str:
    """A real fastText classifier on real text: math + science abstracts (1) vs Wikipedia + web pool (0)."""
    import gzip

    import orjson

    from seedbed.betr.classifier import train_classifier

    read = read_jsonl
    d = tmp_path_factory.mktemp("domain-model")
    pos = read(tiny / "domains" / "math.jsonl.gz") + read(tiny / "domains" / "science_abstracts.jsonl.gz")
    neg = read(tiny / "domains" / "wikipedia.jsonl.gz") + read(tiny / "pool_tiny.jsonl.gz")[:200]
    with gzip.open(d / "labels.jsonl.gz", "wb") as f:
        for lab, rs in ((1, pos), (0, neg)):
            for r in rs:
                f.write(orjson.dumps({"id": r["id"], "text": r["text"], "label": lab}) + b"\n")
    return train_classifier(str(d / "labels.jsonl.gz"), str(d / "model"), params=FAST_FASTTEXT, threads=1)["model_uri"]


@pytest.fixture(scope="session")
def tiny_tokens(tmp_path_factory, tiny) -> str:
    """The five tiny real domain corpora, BPE-tokenized (vocab 2048): the training tests' data."""
    from seedbed.train.tokens import tokenize_domains

    doms = {p.name.split(".")[0]: str(p) for p in sorted((tiny / "domains").glob("*.jsonl.gz"))}
    assert len(doms) == 5, f"expected 5 tiny domain corpora in {tiny / 'domains'}"
    out = str(tmp_path_factory.mktemp("tokens") / "tiny")
    tokenize_domains(doms, out, vocab_size=2048, valid_fraction=0.05)
    return out


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m seedbed.cli ARGS`` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "seedbed.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)
