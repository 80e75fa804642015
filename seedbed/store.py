"""One URI-based object-store API for local paths and ``s3://`` buckets.

Every stage reads and writes through these functions, so the same code runs against a local
directory (the embedded defaults), MinIO/SeaweedFS/Ceph, or AWS S3.

* Local paths (``/data/x``, ``file:///data/x``, relative paths) and ``s3://bucket/key``.
* S3 goes through boto3. Endpoint and credentials come from the standard AWS variables
  (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/
  ``AWS_DEFAULT_REGION``, profiles, instance roles...). Addressing is path-style by default
  (MinIO/SeaweedFS need it; AWS accepts it), override with ``SEEDBED_S3_ADDRESSING_STYLE``.
* Writes are atomic: a local file is written to a hidden temporary name in the same directory
  and renamed into place; an S3 object is uploaded as one PUT or one multipart upload, which
  only becomes visible when it completes (boto3 aborts the upload on failure).
* Transient S3 errors (throttling, 5xx, dropped connections) are retried with exponential
  backoff and jitter by botocore's ``standard`` retry mode (``AWS_MAX_ATTEMPTS``, default 5):
  a well-tested implementation, so none is hand-written here.
* Checksums are sent only where the S3 API requires them (``AWS_REQUEST_CHECKSUM_CALCULATION``,
  default ``when_required``): botocore's newer default breaks several S3-compatible servers.
* Errors are turned into :class:`StoreError` with a message that names the problem (missing
  bucket, missing credentials, unreachable endpoint, missing object).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urlparse

__all__ = [
    "StoreError",
    "NotFound",
    "is_s3",
    "join",
    "parent",
    "basename",
    "open_read",
    "open_write",
    "read_bytes",
    "write_bytes",
    "read_json",
    "write_json",
    "read_text",
    "write_text",
    "exists",
    "list_uris",
    "delete",
    "delete_prefix",
    "size",
    "copy_to_local",
    "local_cache_path",
    "copy_to_path",
]


class StoreError(RuntimeError):
    """An object-store operation failed; the message says why in words a user can act on."""


class NotFound(StoreError, FileNotFoundError):
    """The object (or bucket) does not exist."""


# ----------------------------------------------------------------------------- URIs


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def _local(uri: str) -> Path:
    uri = str(uri)
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    return Path(uri)


def _split_s3(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if not p.netloc:
        raise StoreError(f"malformed S3 URI {uri!r}: expected s3://bucket/key")
    return p.netloc, p.path.lstrip("/")


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/', for S3 and local paths alike."""
    out = str(base)
    for part in parts:
        part = str(part)
        if not part:
            continue
        out = out.rstrip("/") + "/" + part.lstrip("/")
    return out


def parent(uri: str) -> str:
    uri = str(uri).rstrip("/")
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- S3 client


@dataclass(frozen=True)
class _S3Settings:
    endpoint: str | None
    addressing: str
    max_attempts: int
    multipart_threshold: int
    multipart_chunksize: int


def _settings() -> _S3Settings:
    return _S3Settings(
        endpoint=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
        addressing=os.environ.get("SEEDBED_S3_ADDRESSING_STYLE", "path"),
        max_attempts=int(os.environ.get("AWS_MAX_ATTEMPTS", "5")),
        multipart_threshold=int(os.environ.get("SEEDBED_S3_MULTIPART_THRESHOLD", str(64 * 2**20))),
        multipart_chunksize=int(os.environ.get("SEEDBED_S3_MULTIPART_CHUNKSIZE", str(64 * 2**20))),
    )


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def _client():
    import boto3
    from botocore.config import Config

    s = _settings()
    key = (s, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"), os.getpid())
    with _clients_lock:
        if key not in _clients:
            cfg = Config(
                s3={"addressing_style": s.addressing},
                retries={"mode": "standard", "max_attempts": s.max_attempts},
                connect_timeout=float(os.environ.get("SEEDBED_S3_CONNECT_TIMEOUT", "10")),
                read_timeout=float(os.environ.get("SEEDBED_S3_READ_TIMEOUT", "120")),
                # botocore >= 1.36 sends aws-chunked CRC trailers by default, which older MinIO,
                # Ceph RGW and SeaweedFS reject or mangle: checksum only where the API requires it
                request_checksum_calculation=os.environ.get("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required"),
                response_checksum_validation=os.environ.get("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required"),
            )
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            _clients[key] = boto3.session.Session().client(
                "s3", endpoint_url=s.endpoint, region_name=region, config=cfg
            )
        return _clients[key]


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    s = _settings()
    return TransferConfig(
        multipart_threshold=s.multipart_threshold,
        multipart_chunksize=s.multipart_chunksize,
        use_threads=True,
    )


@contextlib.contextmanager
def _s3_errors(uri: str, action: str):
    """Translate botocore exceptions into StoreErrors that name the problem."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise StoreError(
            f"cannot {action} {uri}: no S3 credentials found ({e}). Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment."
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError) as e:
        raise StoreError(
            f"cannot {action} {uri}: S3 endpoint unreachable ({e}). Check AWS_ENDPOINT_URL="
            f"{_settings().endpoint or '(AWS default)'} and the network."
        ) from None
    except ReadTimeoutError as e:
        raise StoreError(f"cannot {action} {uri}: S3 read timed out after retries ({e})") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        bucket = _split_s3(uri)[0]
        if code == "NoSuchBucket":
            raise NotFound(f"cannot {action} {uri}: bucket {bucket!r} does not exist") from None
        if code in ("NoSuchKey", "404", "NotFound"):
            raise NotFound(f"cannot {action} {uri}: no such object") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StoreError(f"cannot {action} {uri}: access denied ({code}); check the S3 credentials") from None
        raise StoreError(f"cannot {action} {uri}: S3 error {code}: {e}") from None


# ----------------------------------------------------------------------------- reading


def open_read(uri: str) -> IO[bytes]:
    """Open an object for streaming binary reads (the caller closes it)."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "read"):
            body = _client().get_object(Bucket=bucket, Key=key)["Body"]
        return _S3Reader(body, uri)
    path = _local(uri)
    if not path.is_file():
        raise NotFound(f"cannot read {uri}: no such file")
    return open(path, "rb")


class _S3Reader(io.RawIOBase):
    """A readable raw stream over a botocore StreamingBody, buffered by the caller."""

    def __init__(self, body, uri: str):
        self._body = body
        self._uri = uri

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        from botocore.exceptions import ReadTimeoutError, ResponseStreamingError

        try:
            data = self._body.read(len(b))
        except (ReadTimeoutError, ResponseStreamingError) as e:
            raise StoreError(f"reading {self._uri} failed mid-stream: {e}") from None
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


def read_bytes(uri: str) -> bytes:
    with contextlib.closing(open_read(uri)) as f:
        if isinstance(f, _S3Reader):
            return io.BufferedReader(f, 1 << 20).read()
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str):
    try:
        return json.loads(read_bytes(uri))
    except json.JSONDecodeError as e:
        raise StoreError(f"{uri} is not valid JSON: {e}") from None


def exists(uri: str) -> bool:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        from botocore.exceptions import ClientError

        try:
            with _s3_errors(uri, "check"):
                _client().head_object(Bucket=bucket, Key=key)
            return True
        except NotFound:
            # head_object cannot tell a missing key from a missing bucket: ask once more
            with _s3_errors(uri, "check"):
                try:
                    _client().head_bucket(Bucket=bucket)
                except ClientError as e:
                    if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                        raise NotFound(f"cannot check {uri}: bucket {bucket!r} does not exist") from None
                    raise
            return False
    return _local(uri).exists()


def size(uri: str) -> int:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "stat"):
            return int(_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    path = _local(uri)
    if not path.is_file():
        raise NotFound(f"cannot stat {uri}: no such file")
    return path.stat().st_size


def list_uris(prefix: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """All objects under ``prefix`` (recursive), sorted; optionally only names ending in ``suffixes``.

    Hidden names (a path component starting with '.' or '_tmp') are never listed: they are
    in-flight temporary files.
    """
    prefix = str(prefix)
    out: list[str] = []
    if is_s3(prefix):
        bucket, key = _split_s3(prefix)
        if key and not key.endswith("/"):
            key += "/"
        with _s3_errors(prefix, "list"):
            pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            for page in pages:
                for obj in page.get("Contents", []):
                    out.append(f"s3://{bucket}/{obj['Key']}")
    else:
        root = _local(prefix)
        if root.is_file():
            out = [str(root)]
        elif root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                out.extend(os.path.join(dirpath, f) for f in filenames)
        else:
            raise NotFound(f"cannot list {prefix}: no such directory")
    out = [u for u in out if not basename(u).startswith(".")]
    if suffixes:
        out = [u for u in out if u.endswith(tuple(suffixes))]
    return sorted(out)


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def open_write(uri: str, spool_bytes: int = 32 * 2**20) -> Iterator[IO[bytes]]:
    """Write an object atomically: it appears whole when the block exits without error, or not at all.

    Local: a hidden temp file in the target directory, fsync'ed, then ``os.replace``.
    S3: buffered in memory up to ``spool_bytes`` then on local disk, uploaded on success
    (multipart above ``SEEDBED_S3_MULTIPART_THRESHOLD``; an incomplete multipart upload is
    never visible and is aborted by boto3 on error).
    """
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        if not key or key.endswith("/"):
            raise StoreError(f"cannot write {uri}: not an object key")
        with tempfile.SpooledTemporaryFile(max_size=spool_bytes) as buf:
            yield buf
            buf.seek(0)
            with _s3_errors(uri, "write"):
                _client().upload_fileobj(buf, bucket, key, Config=_transfer_config())
        return
    path = _local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    f = open(tmp, "wb")
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes(uri: str, data: bytes) -> None:
    with open_write(uri) as f:
        f.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj, indent: int | None = 2) -> None:
    write_bytes(uri, (json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n").encode())


def delete(uri: str) -> None:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri, "delete"):
            _client().delete_object(Bucket=bucket, Key=key)
        return
    path = _local(uri)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def delete_prefix(prefix: str) -> int:
    """Delete every object under ``prefix``; returns how many were deleted."""
    uris = list_uris(prefix) if exists_prefix(prefix) else []
    if is_s3(prefix):
        bucket, _ = _split_s3(prefix)
        for i in range(0, len(uris), 1000):
            keys = [{"Key": _split_s3(u)[1]} for u in uris[i : i + 1000]]
            with _s3_errors(prefix, "delete"):
                _client().delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    else:
        path = _local(prefix)
        if path.is_dir():
            shutil.rmtree(path)
    return len(uris)


def exists_prefix(prefix: str) -> bool:
    if is_s3(prefix):
        bucket, key = _split_s3(prefix)
        if key and not key.endswith("/"):
            key += "/"
        with _s3_errors(prefix, "list"):
            r = _client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return r.get("KeyCount", 0) > 0
    return _local(prefix).exists()


# ----------------------------------------------------------------------------- local copies


def local_cache_path(uri: str, cache_dir: str | None = None) -> Path:
    """Where :func:`copy_to_local` puts ``uri`` (for libraries that need a real file, e.g. fastText)."""
    if not is_s3(uri):
        return _local(uri)
    root = Path(cache_dir or os.environ.get("SEEDBED_CACHE", Path(tempfile.gettempdir()) / "seedbed-cache"))
    bucket, key = _split_s3(uri)
    return root / bucket / key


def copy_to_local(uri: str, cache_dir: str | None = None) -> Path:
    """A local file with the object's bytes: the path itself when local, else a cached download."""
    uri = str(uri)
    dest = local_cache_path(uri, cache_dir)
    if not is_s3(uri):
        if not dest.is_file():
            raise NotFound(f"cannot read {uri}: no such file")
        return dest
    if dest.is_file() and dest.stat().st_size == size(uri):
        return dest
    _download(uri, dest)
    return dest


def _download(uri: str, dest: Path) -> None:
    """S3 object → local file, atomically (a temp name in the same folder, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
    bucket, key = _split_s3(uri)
    try:
        with _s3_errors(uri, "download"):
            _client().download_file(bucket, key, str(tmp), Config=_transfer_config())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def copy_to_path(uri: str, path: str | os.PathLike) -> Path:
    """Copy an object's bytes to a local file path (e.g. a KFP output artifact's ``.path``)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(open_read(uri)) as src, open(dest, "wb") as out:
        shutil.copyfileobj(io.BufferedReader(src, 1 << 20) if isinstance(src, _S3Reader) else src, out, 1 << 20)
    return dest


# ----------------------------------------------------------------------------- directories


def upload_dir(local_dir: str | os.PathLike, prefix: str) -> list[str]:
    """Copy every file under ``local_dir`` to ``prefix`` (same relative layout); returns the URIs.

    Each object is written atomically; a directory is not (callers that need "all or nothing"
    write a completion marker last, as checkpoints do).
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise NotFound(f"cannot upload {root}: no such directory")
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            src = Path(dirpath) / name
            rel = src.relative_to(root).as_posix()
            dest = join(prefix, rel)
            if not is_s3(dest) and _local(dest).resolve() == src.resolve():
                out.append(dest)
                continue
            with open(src, "rb") as f, open_write(dest) as w:
                shutil.copyfileobj(f, w, 1 << 20)
            out.append(dest)
    return sorted(out)


def download_dir(prefix: str, local_dir: str | os.PathLike) -> Path:
    """Copy every object under ``prefix`` into ``local_dir`` (same relative layout)."""
    dest_root = Path(local_dir)
    dest_root.mkdir(parents=True, exist_ok=True)
    base = prefix.rstrip("/")
    uris = list_uris(prefix)
    if not uris:
        raise NotFound(f"cannot download {prefix}: nothing there")
    for uri in uris:
        rel = uri[len(base):].lstrip("/")
        if not is_s3(uri):
            rel = os.path.relpath(uri, str(_local(base)))
        dest = dest_root / rel
        if is_s3(uri):
            _download(uri, dest)
        elif Path(uri).resolve() != dest.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(uri, dest)
    return dest_root
