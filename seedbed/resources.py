"""How many CPUs this process may really use.

``os.cpu_count()`` reports the cores of the *machine*; in a Kubernetes pod (or any container)
the process is usually allowed far fewer, through two independent mechanisms:

* the CPU *affinity* mask (``cpuset``; ``os.sched_getaffinity``), and
* a CFS *bandwidth quota*: cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``)
  or cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1`` = unlimited).
  A pod with ``resources.limits.cpu: 2`` on a 64-core node gets quota/period = 2.

Starting 64 fastText threads under a 2-CPU quota makes the kernel throttle the pod and is
slower than 2 threads, so every stage sizes its thread pools with :func:`available_cpus`.
The quota is rounded *up* (1.5 CPUs → 2 threads) and the result is at least 1.

``SEEDBED_THREADS`` overrides everything (a positive integer), for benchmarks and for
clusters whose limits are not visible from inside the container.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_quota"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def _own_cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Map controller name → this process's cgroup path, from /proc/self/cgroup ('' = v2)."""
    out: dict[str, str] = {}
    text = _read(proc_cgroup)
    if not text:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def _v2_quota(root: Path, own: dict[str, str]) -> float | None:
    # cpu.max of the process's own cgroup and its ancestors (the tightest limit wins); inside a
    # container with a private cgroup namespace the own path is "/" and cpu.max is at the root.
    candidates = []
    rel = own.get("")
    if rel is not None:
        p = root / rel.lstrip("/")
        while True:
            candidates.append(p / "cpu.max")
            if p == root or root not in p.parents:
                break
            p = p.parent
    candidates.append(root / "cpu.max")
    best: float | None = None
    for f in dict.fromkeys(candidates):
        text = _read(f)
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2 or fields[0] == "max":
            continue
        try:
            quota, period = float(fields[0]), float(fields[1])
        except ValueError:
            continue
        if quota > 0 and period > 0:
            best = quota / period if best is None else min(best, quota / period)
    return best


def _v1_quota(root: Path, own: dict[str, str]) -> float | None:
    best: float | None = None
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / mount
        if not base.is_dir():
            continue
        dirs = [base]
        rel = own.get("cpu")
        if rel and rel != "/":
            dirs.insert(0, base / rel.lstrip("/"))
        for d in dirs:
            q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            try:
                quota, period = float(q), float(p)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if quota > 0 and period > 0:
                best = quota / period if best is None else min(best, quota / period)
    return best


def cgroup_cpu_quota(root: str | os.PathLike | None = None, proc_cgroup: str | os.PathLike = "/proc/self/cgroup") -> float | None:
    """The CFS bandwidth limit in CPUs (e.g. 2.0, 0.5), or None where no quota is set."""
    r = Path(root) if root is not None else _CGROUP_ROOT
    own = _own_cgroup_paths(Path(proc_cgroup))
    limits = [q for q in (_v2_quota(r, own), _v1_quota(r, own)) if q is not None]
    return min(limits) if limits else None


def available_cpus(root: str | os.PathLike | None = None, proc_cgroup: str | os.PathLike = "/proc/self/cgroup") -> int:
    """CPUs this process may use: affinity mask, capped by the cgroup quota; ``SEEDBED_THREADS`` wins.

    Never just ``os.cpu_count()`` (the machine's cores): that over-subscribes containers.
    """
    env = os.environ.get("SEEDBED_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"SEEDBED_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"SEEDBED_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)
