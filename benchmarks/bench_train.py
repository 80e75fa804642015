#!/usr/bin/env python
"""Benchmark: the DeepSpeed trainer's tokens/s against a bare PyTorch loop (target ≥ 0.9×).

Both sides train the same Llama preset from the same init on the same real token batches (the
tiny domain corpora, BPE-tokenized, or ``--tokens``), with the same micro batch, gradient
accumulation, AdamW, gradient clipping and LR schedule, fp32 on CPU (or ``--device cuda``):

- **ours**: the real entrypoint, ``python -m seedbed.train.entry`` (DeepSpeed engine, mixture
  loader, metrics) in its own process, checkpointing only at the end; its per-step times come
  from ``metrics.jsonl``;
- **bare**: a plain ``for`` loop — ``model(x).loss / gas``, ``backward``, ``clip_grad_norm_``,
  ``opt.step()`` — in its own process, batches pre-built in memory.

The median step time after ``--warmup`` steps is compared; runs alternate ``--repeat`` times
(min of the medians) so a noisy neighbour hurts both alike.

    python benchmarks/bench_train.py                          # tiny-256, seq 256, 8 seqs × 2 accumulation
    python benchmarks/bench_train.py --preset tiny-128 --steps 30 --quick
    python benchmarks/bench_train.py --preset 1b --seq-len 2048 --micro 4 --gas 1 --device cuda --peak-flops 989e12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIX = {"wikipedia": 0.4, "books_gutenberg": 0.2, "code_python": 0.2, "math": 0.1, "science_abstracts": 0.1}


def make_tokens(dest: Path) -> str:
    from seedbed.data import shared_data_dir
    from seedbed.train.tokens import tokenize_domains

    data = shared_data_dir()
    if data is None:
        sys.exit("needs ../shared/data (tiny/domains) or --tokens")
    doms = {p.name.split(".")[0]: str(p) for p in sorted((data / "tiny" / "domains").glob("*.jsonl.gz"))}
    tokenize_domains(doms, str(dest), vocab_size=8192, valid_fraction=0.02)
    return str(dest)


def config(a, tokens: str, out: str) -> dict:
    return {"tokens_uri": tokens, "out_uri": out, "preset": a.preset, "lr": 1e-3, "mixture": MIX,
            "seq_len": a.seq_len, "micro_batch_size": a.micro, "global_batch_tokens": a.seq_len * a.micro * a.gas,
            "total_tokens": a.seq_len * a.micro * a.gas * a.steps, "warmup_steps": 2, "checkpoint_every": 0,
            "eval_tokens": a.seq_len * 2, "progress": False, "device": a.device, "zero_stage": a.zero,
            **({"peak_flops": a.peak_flops} if a.peak_flops else {})}


def bare(cfg_path: str, result_path: str) -> None:
    """The baseline loop (runs in its own process)."""
    import torch

    from seedbed.train.config import TrainConfig
    from seedbed.train.loader import MixtureLoader
    from seedbed.train.presets import build_model, get_preset
    from seedbed.train.schedule import build_schedule, lr_factor
    from seedbed.train.tokens import open_tokens
    from seedbed.train.trainer import _param_groups

    cfg = TrainConfig.load(cfg_path)
    dev = torch.device("cuda" if cfg.device == "cuda" else "cpu")
    ds = open_tokens(cfg.tokens_uri)
    steps, gbs = cfg.total_steps, cfg.global_batch_sequences
    sched = build_schedule(steps * gbs, cfg.seq_len, cfg.mixture, ds.domains)
    loader = MixtureLoader({d: ds.shards(d) for d in ds.domains}, sched, cfg.seed)
    batches = [torch.from_numpy(loader.next_batch(gbs)[0]) for _ in range(steps)]
    model = build_model(get_preset(cfg.preset), ds.vocab_size, ds.eos_id, cfg.seed).to(dev)
    if dev.type == "cuda":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                            fused=dev.type == "cuda")
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, cfg.lr_schedule, cfg.warmup_steps))
    gas = cfg.grad_accum(1)
    times, losses = [], []
    for x in batches:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = x.to(dev)
        total = 0.0
        for m in range(gas):
            mb = x[m * cfg.micro_batch_size : (m + 1) * cfg.micro_batch_size]
            loss = model(input_ids=mb, labels=mb).loss
            (loss / gas).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        lr.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(total / gas)
    Path(result_path).write_text(json.dumps({"step_seconds": times, "loss": losses}))


def run_ours(cfg: dict, tmp: Path, i: int) -> tuple[list[float], list[float]]:
    cfg = dict(cfg, out_uri=str(tmp / f"ours-{i}"))
    path = tmp / f"ours-{i}.json"
    path.write_text(json.dumps(cfg))
    subprocess.run([sys.executable, "-m", "seedbed.train.entry", "--config", str(path)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recs = [json.loads(ln) for ln in (tmp / f"ours-{i}" / "metrics.jsonl").read_text().splitlines() if ln]
    return [r["step_seconds"] for r in recs], [r["loss"] for r in recs], recs


def run_bare(cfg: dict, tmp: Path, i: int) -> tuple[list[float], list[float]]:
    path, res = tmp / f"bare-{i}.json", tmp / f"bare-{i}.out.json"
    path.write_text(json.dumps(cfg))
    subprocess.run([sys.executable, __file__, "--bare-run", str(path), str(res)], check=True, cwd=ROOT)
    r = json.loads(res.read_text())
    return r["step_seconds"], r["loss"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny-256")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--gas", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--zero", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--peak-flops", type=float, default=None)
    ap.add_argument("--tokens", default=None, help="a token dataset (default: tokenize the tiny domain corpora)")
    ap.add_argument("--quick", action="store_true", help="20 steps, one repeat")
    ap.add_argument("--bare-run", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.bare_run:
        return bare(*a.bare_run)
    if a.quick:
        a.steps, a.repeat = 20, 1
    with tempfile.TemporaryDirectory(prefix="bench-train-") as t:
        tmp = Path(t)
        tokens = a.tokens or make_tokens(tmp / "tokens")
        cfg = config(a, tokens, "")
        tok_per_step = a.seq_len * a.micro * a.gas
        print(f"{a.preset}, seq {a.seq_len}, {a.micro} seqs × {a.gas} accumulation = {tok_per_step:,} tokens/step, "
              f"{a.steps} steps (median after {a.warmup}), ZeRO-{a.zero}, {a.device}, threads "
              f"{os.environ.get('OMP_NUM_THREADS', 'default')}, load {os.getloadavg()[0]:.2f}")
        ours, base, last = [], [], None
        for i in range(a.repeat):
            t_o, l_o, last = run_ours(cfg, tmp, i)
            t_b, l_b = run_bare(cfg, tmp, i)
            mo, mb = statistics.median(t_o[a.warmup:]), statistics.median(t_b[a.warmup:])
            ours.append(mo)
            base.append(mb)
            print(f"  run {i}: ours {tok_per_step / mo:,.0f} tok/s ({mo * 1e3:.1f} ms/step), bare "
                  f"{tok_per_step / mb:,.0f} tok/s ({mb * 1e3:.1f} ms/step); final loss ours {l_o[-1]:.4f} "
                  f"bare {l_b[-1]:.4f}; load {os.getloadavg()[0]:.2f}")
        mo, mb = min(ours), min(base)
        print(f"ours {tok_per_step / mo:,.0f} tok/s, bare {tok_per_step / mb:,.0f} tok/s: "
              f"ours/bare throughput = {mb / mo:.3f}× (target ≥ 0.9×)")
        if last and last[-1].get("mfu") is not None:
            print(f"MFU (ours, last step): {last[-1]['mfu'] * 100:.1f}%")


if __name__ == "__main__":
    main()
