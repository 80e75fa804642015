"""Training entrypoint: ``python -m seedbed.train.entry --config <uri> [--set key=value ...]``.

What ``torchrun`` (locally, or from a Kubeflow Trainer ``TrainJob`` with ``PET_*`` variables) and
the MPI launcher of the ``deepspeed-distributed`` runtime start in every process.
Exit status: 0 done, 2 bad config or input, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"error: --set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seedbed.train.entry", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="training config JSON (local path or s3://)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field (JSON value), e.g. --set max_steps=10")
    args = ap.parse_args(argv)

    from seedbed import store
    from seedbed.train.checkpoint import CheckpointError
    from seedbed.train.config import ConfigError, TrainConfig
    from seedbed.train.loader import DataExhausted
    from seedbed.train.schedule import ScheduleError
    from seedbed.train.trainer import TrainError, train

    try:
        try:
            raw = store.read_json(args.config)
        except store.NotFound:
            raise ConfigError(f"training config {args.config} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"training config {args.config} is not valid JSON: {e}") from None
        raw.update(_parse_sets(args.sets))
        cfg = TrainConfig.from_dict(raw)
        train(cfg)
    except (ConfigError, ScheduleError, DataExhausted, CheckpointError, TrainError, ValueError, store.StoreError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
