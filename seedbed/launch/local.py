"""Run the training entrypoint under ``torchrun`` on this machine, one process per simulated node.

The same argv a TrainJob runs (``torchrun -m seedbed.train.entry --config <uri>``), made explicit
for 127.0.0.1: for ``nnodes`` nodes, ``nnodes`` torchrun processes with a static rendezvous
(``--nnodes N --node-rank i --nproc-per-node P --master-addr 127.0.0.1 --master-port <free>``),
each started as ``sys.executable -m torch.distributed.run`` so this environment's torch is used.

Each node's output (its workers inherit torchrun's stdout/stderr) is streamed line by line with a
``[node i]`` prefix to ``log`` and, with ``log_dir``, tee'd to ``<log_dir>/node-<i>.log``. When a
node exits non-zero the others are stopped (SIGTERM to their process groups and to the worker
process groups torchrun created, SIGKILL after a grace period) and :class:`LocalRunFailed` names
the node, every exit code and the tail of the failing node's log. ``timeout_s`` stops everything
and raises :class:`LocalRunTimeout`.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

__all__ = [
    "LocalRunFailed",
    "LocalRunTimeout",
    "free_port",
    "torchrun_command",
    "run_torchrun_local",
]

ENTRY_MODULE = "seedbed.train.entry"
TAIL_LINES = 40


class LocalRunFailed(RuntimeError):
    """A simulated node exited non-zero; ``node``, ``exit_codes`` and ``tail`` say which and why."""

    def __init__(self, message: str, *, node: int, exit_codes: dict[int, int | None], tail: str):
        super().__init__(message)
        self.node = node
        self.exit_codes = exit_codes
        self.tail = tail


class LocalRunTimeout(TimeoutError):
    """The local run took longer than ``timeout_s``; every process was stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def torchrun_command(
    entry_args: list[str],
    *,
    nnodes: int = 1,
    nproc_per_node: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    module: str = ENTRY_MODULE,
    python: str | None = None,
) -> list[str]:
    """The exact argv of one simulated node's torchrun."""
    if nnodes < 1 or nproc_per_node < 1:
        raise ValueError(f"nnodes and nproc_per_node must be >= 1, got {nnodes} and {nproc_per_node}")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank {node_rank} is not in [0, {nnodes})")
    return [
        python or sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(nnodes),
        "--node-rank", str(node_rank),
        "--nproc-per-node", str(nproc_per_node),
        "--rdzv-backend", "static",
        "--master-addr", master_addr,
        "--master-port", str(master_port),
        "--max-restarts", "0",
        "-m", module,
        *[str(a) for a in entry_args],
    ]


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[ppid].append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal_tree(pids: list[int], sig: int) -> None:
    """Send ``sig`` to each pid's process group (torchrun's workers lead their own groups) and the pid."""
    for pid in pids:
        for fn in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
            try:
                fn()
            except (ProcessLookupError, PermissionError, OSError):
                pass


class _Node:
    def __init__(self, rank: int, cmd: list[str], env: dict, cwd, log, log_path: Path | None):
        self.rank = rank
        self.cmd = cmd
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._log = log
        self._file = open(log_path, "w", encoding="utf-8") if log_path else None
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, text=True, encoding="utf-8", errors="replace", bufsize=1,
        )
        self.killed = False
        self.reader = threading.Thread(target=self._pump, name=f"torchrun-node-{rank}", daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.tail.append(line)
            if self._file:
                self._file.write(line + "\n")
                self._file.flush()
            try:
                self._log(f"[node {self.rank}] {line}")
            except Exception:  # noqa: BLE001 - a broken log sink must not stop the pump
                pass

    def stop(self, grace_s: float) -> None:
        if self.proc.poll() is not None:
            return
        self.killed = True
        tree = [self.proc.pid, *_descendants(self.proc.pid)]  # before they get reparented
        _signal_tree(tree, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_tree([self.proc.pid, *_descendants(self.proc.pid), *tree], signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self.reader.join(timeout=5)
        if self._file:
            self._file.close()


def run_torchrun_local(
    entry_args: list[str],
    nnodes: int = 1,
    nproc_per_node: int = 1,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    log_dir: str | os.PathLike | None = None,
    master_port: int | None = None,
    *,
    module: str = ENTRY_MODULE,
    cwd: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    grace_s: float = 10.0,
    poll_s: float = 0.05,
) -> None:
    """Run ``python -m <module> <entry_args>`` on ``nnodes`` x ``nproc_per_node`` local processes.

    Returns when every node exited 0; raises :class:`LocalRunFailed` (first failing node, exit
    codes, log tail) or :class:`LocalRunTimeout`. ``env`` is added to this process's environment
    (inherited ``PET_*`` variables are dropped so the explicit flags alone decide the topology).
    """
    nnodes, nproc_per_node = int(nnodes), int(nproc_per_node)
    port = int(master_port) if master_port else free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    child_env.update({k: str(v) for k, v in (env or {}).items()})
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    logs = Path(log_dir) if log_dir else None
    if logs:
        logs.mkdir(parents=True, exist_ok=True)
    cmds = [
        torchrun_command(entry_args, nnodes=nnodes, nproc_per_node=nproc_per_node, node_rank=i,
                         master_port=port, module=module)
        for i in range(nnodes)
    ]
    log(f"torchrun local: {nnodes} node(s) x {nproc_per_node} process(es), master 127.0.0.1:{port}")
    nodes: list[_Node] = []
    start = time.monotonic()
    try:
        for i, cmd in enumerate(cmds):
            nodes.append(_Node(i, cmd, child_env, cwd, log, logs / f"node-{i}.log" if logs else None))
        failed: _Node | None = None
        while True:
            codes = [n.proc.poll() for n in nodes]
            bad = [n for n, c in zip(nodes, codes) if c not in (None, 0)]
            if bad:
                failed = bad[0]
                break
            if all(c == 0 for c in codes):
                break
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                for n in nodes:
                    n.stop(grace_s)
                for n in nodes:
                    n.close()
                tails = "\n".join(f"--- node {n.rank} ---\n" + "\n".join(n.tail) for n in nodes)
                raise LocalRunTimeout(
                    f"local torchrun run did not finish within {timeout_s:g}s; all {nnodes} node(s) were "
                    f"stopped. Last output:\n{tails}"
                )
            time.sleep(poll_s)
        if failed is None:
            for n in nodes:
                n.close()
            log(f"torchrun local: all {nnodes} node(s) finished in {time.monotonic() - start:.1f}s")
            return
        for n in nodes:
            if n is not failed:
                n.stop(grace_s)
        for n in nodes:
            n.close()
        exit_codes = {n.rank: n.proc.returncode for n in nodes}
        tail = "\n".join(failed.tail)

        def describe(n: _Node) -> str:
            c = n.proc.returncode
            what = f"signal {signal.Signals(-c).name}" if c is not None and c < 0 else f"exit code {c}"
            return f"node {n.rank}: {what}" + (" (stopped by the launcher)" if n.killed else "")

        where = f" (log: {logs / f'node-{failed.rank}.log'})" if logs else ""
        raise LocalRunFailed(
            f"local torchrun node {failed.rank} failed with exit code {failed.proc.returncode}; "
            f"the other node(s) were stopped. [{'; '.join(describe(n) for n in nodes)}]\n"
            f"last lines of node {failed.rank}{where}:\n{tail}",
            node=failed.rank, exit_codes=exit_codes, tail=tail,
        )
    except BaseException:
        for n in nodes:  # KeyboardInterrupt / errors while starting: never leave processes behind
            if n.proc.poll() is None:
                n.stop(grace_s)
        raise
