"""Checkpoints on the object store: complete or invisible.

DeepSpeed writes a checkpoint as files per rank into a local staging directory; every rank
uploads what it wrote to ``<out>/checkpoints/step-NNNNNNNN/``, and only after all ranks are done
does rank 0 write ``COMPLETE`` — a JSON list of every file with its size. A checkpoint without
the marker (a run killed mid-upload) is never resumed from; one whose files disagree with the
marker is reported as corrupt instead of being loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

from seedbed import store

MARKER = "COMPLETE"
_STEP_RE = re.compile(r"step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed: corrupt, or written by an incompatible config."""


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def root(out_uri: str) -> str:
    return store.join(out_uri, "checkpoints")


def _step_dirs(out_uri: str) -> dict[int, str]:
    r = root(out_uri)
    if not store.exists_prefix(r):
        return {}
    out = {}
    for uri in store.list_uris(r):
        rel = uri[len(r.rstrip("/")) + 1 :] if store.is_s3(uri) else str(Path(uri).relative_to(Path(r)))
        head = rel.split("/", 1)[0]
        m = _STEP_RE.match(head)
        if m:
            out[int(m.group(1))] = store.join(r, head)
    return out


def complete_steps(out_uri: str) -> list[int]:
    """Steps whose checkpoint carries the completion marker, ascending."""
    return sorted(s for s, d in _step_dirs(out_uri).items() if store.exists(store.join(d, MARKER)))


def write_marker(ckpt_uri: str, files: list[dict], meta: dict) -> None:
    store.write_json(store.join(ckpt_uri, MARKER), {"files": sorted(files, key=lambda f: f["path"]), **meta})


def read_marker(ckpt_uri: str) -> dict:
    try:
        return store.read_json(store.join(ckpt_uri, MARKER))
    except Exception as e:  # noqa: BLE001 — any unreadable marker is a corrupt checkpoint
        raise CheckpointError(f"checkpoint {ckpt_uri}: unreadable {MARKER} marker ({e})") from None


def verify(ckpt_uri: str) -> dict:
    """The marker, after checking every listed file exists with its recorded size."""
    marker = read_marker(ckpt_uri)
    if not isinstance(marker.get("files"), list) or not marker["files"]:
        raise CheckpointError(f"checkpoint {ckpt_uri}: {MARKER} lists no files")
    for f in marker["files"]:
        uri = store.join(ckpt_uri, f["path"])
        try:
            got = store.size(uri)
        except store.NotFound:
            raise CheckpointError(f"checkpoint {ckpt_uri} is corrupt: {f['path']} is missing") from None
        if got != f["size"]:
            raise CheckpointError(f"checkpoint {ckpt_uri} is corrupt: {f['path']} has {got} bytes, "
                                  f"the marker says {f['size']}")
    return marker


def latest(out_uri: str) -> tuple[int, str] | None:
    """The newest complete checkpoint as (step, uri), or None."""
    steps = complete_steps(out_uri)
    if not steps:
        return None
    return steps[-1], store.join(root(out_uri), step_name(steps[-1]))


def upload_rank_files(staging: Path, ckpt_uri: str) -> list[dict]:
    """Upload the files this rank wrote; returns ``[{"path", "size"}]`` relative to the checkpoint."""
    out = []
    for uri in store.upload_dir(staging, ckpt_uri):
        rel = uri[len(ckpt_uri.rstrip("/")) + 1 :] if store.is_s3(uri) else str(Path(uri).relative_to(Path(ckpt_uri)))
        out.append({"path": rel, "size": (staging / rel).stat().st_size})
    return out


def download(ckpt_uri: str, marker: dict, dest: Path, want=lambda path: True) -> Path:
    """Copy the checkpoint's files (those ``want`` accepts) into ``dest``; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in marker["files"]:
        if not want(f["path"]):
            continue
        target = dest / f["path"]
        if target.is_file() and target.stat().st_size == f["size"]:
            continue
        store.copy_to_path(store.join(ckpt_uri, f["path"]), target)
    return dest


def prune(out_uri: str, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete ones older than them."""
    dirs = _step_dirs(out_uri)
    done = complete_steps(out_uri)
    keep_steps = set(done[-keep:])
    newest = max(keep_steps) if keep_steps else -1
    removed = []
    for s, d in sorted(dirs.items()):
        if s in keep_steps or s > newest:
            continue
        if store.exists(store.join(d, MARKER)):  # marker first: a half-deleted checkpoint is never "complete"
            store.delete(store.join(d, MARKER))
        store.delete_prefix(d)
        removed.append(s)
    return removed
