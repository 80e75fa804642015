#!/usr/bin/env python
"""Benchmark: the BETR scorer (exact per-example top-K + min rank) against a bare matmul.

Both sides do the same similarity computation, S = T Xᵀ for M targets and N documents in
chunks of ``--chunk`` documents written into a reused buffer; the baseline does nothing else,
so ``ours / bare`` is the overhead of finding the top-K, the best cosine per document and the
min rank (target: ≤ 1.5×). Times are the minimum over ``--repeat`` interleaved runs (the two
alternate, so a noisy neighbour hurts both alike); the load average is printed with them.

The vectors are random unit vectors (float32), not real embeddings: this measures compute,
and the top-K filter's work depends on the order in which documents arrive (random here, as
in a shuffled sample), not on what the vectors mean. ``--check`` verifies the result against
a full sort for a few targets.

    python benchmarks/bench_score.py                 # M=10,000 targets, N=100,000 docs, d=384, K=256
    python benchmarks/bench_score.py --quick         # M=2,000, N=20,000
    python benchmarks/bench_score.py --M 10000 --N 1000000 --d 1024 --chunk 8192 --profile
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from seedbed.betr import score  # noqa: E402
from seedbed.betr.embed import available_cpus, torch_threads  # noqa: E402


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def bare_matmul(T: torch.Tensor, X: torch.Tensor, chunk: int) -> None:
    """The same chunked T @ X_cᵀ into a reused buffer, and nothing else."""
    M, N = T.shape[0], X.shape[0]
    buf = torch.empty(M * min(chunk, N))
    for s in range(0, N, chunk):
        xc = X[s:s + chunk]
        n = xc.shape[0]
        torch.mm(T, xc.t(), out=buf[: M * n].view(M, n))


def ours(T: torch.Tensor, X: torch.Tensor, k: int, chunk: int, method: str, threads: int):
    mr, best, top = score.min_rank_and_best_cos(T, X, k, chunk_size=chunk, device="cpu",
                                                threads=threads, method=method)
    return mr, best, top


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--M", type=int, default=10_000, help="target examples")
    ap.add_argument("--N", type=int, default=100_000, help="documents")
    ap.add_argument("--d", type=int, default=384, help="embedding dimension")
    ap.add_argument("--k", type=int, default=256, help="top-K per example")
    ap.add_argument("--chunk", type=int, default=score.DEFAULT_CHUNK_CPU, help="documents per chunk")
    ap.add_argument("--method", default="auto", choices=["auto", "filter", "topk"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: CPUs available)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="M=2000, N=20000, 2 repeats")
    ap.add_argument("--check", action="store_true", help="verify a few targets against a full sort")
    ap.add_argument("--profile", action="store_true", help="print a torch profiler table of one run")
    a = ap.parse_args(argv)
    if a.quick:
        a.M, a.N, a.repeat = min(a.M, 2000), min(a.N, 20_000), min(a.repeat, 2)
    threads = a.threads or available_cpus()

    T = unit_rows(a.M, a.d, 0)
    X = unit_rows(a.N, a.d, 1)
    print(f"bench_score: M={a.M:,} targets, N={a.N:,} docs, d={a.d}, K={a.k}, chunk={a.chunk}, "
          f"method={a.method}, threads={threads}, torch {torch.__version__}")
    print("data: random unit vectors (float32) — a compute benchmark, not a quality one")

    with torch_threads(threads):
        bare_matmul(T[:256], X[: 4 * a.chunk], a.chunk)  # warm up BLAS and the allocator
        times: dict[str, list[float]] = {"bare": [], "ours": []}
        for r in range(a.repeat):
            t0 = time.perf_counter()
            bare_matmul(T, X, a.chunk)
            times["bare"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            mr, best, top = ours(T, X, a.k, a.chunk, a.method, threads)
            times["ours"].append(time.perf_counter() - t0)
            print(f"  run {r + 1}: bare {times['bare'][-1]:.2f}s  ours {times['ours'][-1]:.2f}s  "
                  f"(load avg {os.getloadavg()[0]:.2f})", flush=True)

    tb, to = min(times["bare"]), min(times["ours"])
    flops = 2.0 * a.M * a.N * a.d
    pair_ratios = [o / b for o, b in zip(times["ours"], times["bare"])]
    print(f"bare matmul : {tb:8.2f} s  {a.N / tb:12,.0f} docs/s  {flops / tb / 1e9:7.1f} GFLOP/s")
    print(f"ours (top-K + best cos + min rank): {to:8.2f} s  {a.N / to:12,.0f} docs/s "
          f"({a.M * a.N / to / 1e9:.2f} G pairs/s)")
    print(f"ratio ours/bare (min/min): {to / tb:.2f}x   per-run ratios: "
          + ", ".join(f"{x:.2f}" for x in pair_ratios) + "   target <= 1.5x")
    print(f"docs in some example's top-K: {(mr <= top.k).sum():,} of {a.N:,}")

    if a.check:
        rng = np.random.default_rng(0)
        rows = rng.choice(a.M, size=min(16, a.M), replace=False)
        sims = T[rows] @ X.t()
        ref = torch.topk(sims, top.k, dim=1).indices.numpy()
        ok = all(set(ref[j]) == set(top.indices[i]) for j, i in enumerate(rows))
        ok_best = np.allclose(best[: 10_000], (T @ X[: 10_000].t()).amax(0).numpy(), atol=1e-6)
        print(f"check vs full sort ({len(rows)} targets): {'OK' if ok else 'MISMATCH'}; "
              f"best cos (10K docs): {'OK' if ok_best else 'MISMATCH'}")
        if not (ok and ok_best):
            return 1

    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch_threads(threads), profile(activities=[ProfilerActivity.CPU]) as prof:
            ours(T, X, a.k, a.chunk, a.method, threads)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
