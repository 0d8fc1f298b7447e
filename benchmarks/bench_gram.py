"""Calibration Hessian kernel: ``gram`` (upper-triangle stripes, mirrored) against the plain ``x.T @ x``.

For SmolLM2's Linear input widths (576: q/k/v, o, gate/up; 1536: down) and batches of 512 and 4,096 tokens
(one and eight 512-token calibration chunks per forward), times both on the same random ``x`` (median of
``--repeats``, interleaved), checks they agree, prints a table and writes ``benchmarks/results/gram.json``.

    .venv/bin/python benchmarks/bench_gram.py --threads 2
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

from robustprune.checkpoints import write_json  # noqa: E402
from robustprune.pruning.hessian import gram  # noqa: E402


def _time(fn, repeats: int) -> list[float]:  # noqa: ANN001
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[576, 1536])
    p.add_argument("--tokens", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gram.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    print(f"{'d':>5} {'tokens':>6} {'x.T@x ms':>9} {'gram ms':>8} {'ratio':>6} {'max |diff|':>10}")
    for d in args.widths:
        for n in args.tokens:
            x = torch.randn(n, d, generator=g)
            plain, ours = [], []
            for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both
                plain += _time(lambda: x.T @ x, 1)  # noqa: B023
                ours += _time(lambda: gram(x), 1)  # noqa: B023
            diff = float((gram(x) - x.T @ x).abs().max())
            row = {
                "d": d,
                "tokens": n,
                "plain_ms": statistics.median(plain) * 1e3,
                "gram_ms": statistics.median(ours) * 1e3,
                "max_abs_diff": diff,
            }
            row["ratio"] = row["gram_ms"] / row["plain_ms"]
            rows.append(row)
            print(
                f"{d:5d} {n:6d} {row['plain_ms']:9.2f} {row['gram_ms']:8.2f} {row['ratio']:6.2f} {diff:10.2e}"
            )
    write_json(
        args.out,
        {
            "benchmark": "gram vs x.T @ x (float32)",
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "results": rows,
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
