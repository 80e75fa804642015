"""A tiny real distributed program for tests/test_launch.py, standing in for seedbed.train.entry.

Run as ``python -m dist_probe --config <json>`` (tests/ on PYTHONPATH) by torchrun or by the
rendered MPI command. Like the real entrypoint it reads a config JSON and writes under its
``out_uri``: torch.distributed is initialised with gloo from the env:// variables the launcher
set (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT/LOCAL_RANK), ``rank + 1`` is all-reduced, every rank
writes ``rank-<r>.json`` and rank 0 writes ``summary.json``. Config knobs: ``fail_rank`` (that rank
exits 3 after the rendezvous, leaving the others blocked in the all-reduce) and ``hang_s`` (sleep
before anything else, to test timeouts). Each rank writes ``pid-<r>`` as soon as it knows its rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    args, extra = ap.parse_known_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    out = Path(cfg["out_uri"])
    out.mkdir(parents=True, exist_ok=True)
    env_rank = os.environ.get("RANK", "x")
    (out / f"pid-{env_rank}").write_text(str(os.getpid()))
    if cfg.get("hang_s"):
        time.sleep(float(cfg["hang_s"]))

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"probe: rank {rank}/{world} up (local rank {os.environ.get('LOCAL_RANK')})", flush=True)
    if rank == cfg.get("fail_rank", -1):
        print(f"probe: rank {rank} failing on purpose", flush=True)
        sys.exit(3)
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    (out / f"rank-{rank}.json").write_text(json.dumps({
        "rank": rank,
        "world_size": world,
        "sum": t.item(),
        "local_rank": int(os.environ.get("LOCAL_RANK", "-1")),
        "master_addr": os.environ.get("MASTER_ADDR"),
        "extra_args": extra,
        "seen_env": {k: os.environ.get(k) for k in ("SEEDBED_PROBE", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                                    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")},
    }))
    dist.barrier()
    if rank == 0:
        (out / "summary.json").write_text(json.dumps({
            "final_loss": 1.5, "tokens": 4096, "tokens_per_s": 1234.5, "world_size": world,
            "allreduce_sum": t.item(), "finished": True, "phases": {"main": {"tokens": 4096}},
        }))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
