"""Micro-benchmark of the SparseGPT kernel (robustprune.pruning.sparsegpt_prune).

Times ``sparsegpt_prune`` on BERT/GPT-2-sized MLP weights (768x3072 and 3072x768) with a Hessian from
128 sequences x 64 tokens of random correlated inputs, at 50 % unstructured and 2:4 sparsity. Prints a
table and writes ``benchmarks/results/kernels.json``. Standalone: ``python benchmarks/bench_kernels.py``
(add ``--device cuda`` on a GPU machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import _common  # noqa: F401,E402 - paths and the offline environment, as every benchmark
import torch
from _common import write_results  # noqa: E402

from robustprune.pruning import accumulate_xtx, output_error, parse_pattern, sparsegpt_prune  # noqa: E402

SHAPES = ((768, 3072), (3072, 768))
PATTERNS = ("0.5", "2:4")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(
    d_out: int,
    d_in: int,
    pattern: str,
    *,
    device: torch.device,
    repeats: int,
    block_size: int,
    seqs: int,
    seq_len: int,
    seed: int,
) -> dict:
    """Time one (shape, pattern) case; returns a JSON-ready row."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g).to(device)
    mix = (torch.randn(d_in, d_in, generator=g) / d_in**0.5).to(device)
    H, n_seen = None, 0
    for first in range(0, seqs, 16):  # stream the calibration tokens in batches of 16 sequences
        x = torch.randn(min(16, seqs - first) * seq_len, d_in, generator=g).to(device) @ mix
        H, n_seen = accumulate_xtx(H, x, n_seen)
    assert H is not None and n_seen == seqs * seq_len
    pat = parse_pattern(pattern)
    sparsegpt_prune(W, H, pat, block_size=block_size)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        result = sparsegpt_prune(W, H, pat, block_size=block_size)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {
        "shape": [d_out, d_in],
        "pattern": pattern,
        "block_size": block_size,
        "tokens": seqs * seq_len,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "us_per_column": statistics.median(times) / d_in * 1e6,
        "output_error": output_error(W, result.weight, H),
        "damp": result.damp,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0, ...)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--seqs", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "kernels.json"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]  # other processes on the machine distort CPU timings badly
    rows = []
    header = f"{'shape':>10} {'pattern':>7} {'median s':>9} {'min s':>8} {'us/col':>8} {'out err':>8}"
    print(header)
    print("-" * len(header))
    for d_out, d_in in SHAPES:
        for pattern in PATTERNS:
            row = bench_one(
                d_out,
                d_in,
                pattern,
                device=device,
                repeats=args.repeats,
                block_size=args.block_size,
                seqs=args.seqs,
                seq_len=args.seq_len,
                seed=args.seed,
            )
            rows.append(row)
            print(
                f"{f'{d_out}x{d_in}':>10} {pattern:>7} {row['median_s']:9.3f} {row['min_s']:8.3f} "
                f"{row['us_per_column']:8.1f} {row['output_error']:8.4f}"
            )

    report = {
        "benchmark": "sparsegpt_prune",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
        "python": platform.python_version(),
        "results": rows,
    }
    return write_results(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
