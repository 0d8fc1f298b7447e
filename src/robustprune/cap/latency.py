"""CPU latency of a classifier's forward, median over ``torch.utils.benchmark`` runs.

Models are timed on the same inputs, alternately, in one process, so that a ratio (dense / pruned) is
comparable even on a shared machine; ``torch.set_num_threads`` is set for the measurement and restored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Latency:
    name: str
    batch_size: int
    threads: int
    median_ms: float
    iqr_ms: float
    runs: int


@torch.inference_mode()
def measure(
    models: dict[str, nn.Module],
    batch: dict[str, torch.Tensor],
    *,
    threads: int = 2,
    min_run_time: float = 1.0,
    rounds: int = 3,
) -> dict[str, Latency]:
    """Median forward latency of every model on ``batch``; ``rounds`` alternations of ``min_run_time`` s each."""
    from torch.utils import benchmark

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {k: [] for k in models}
    try:
        for m in models.values():
            m.eval()
            m(**batch)  # warm-up
        for _ in range(rounds):
            for name, m in models.items():
                timer = benchmark.Timer(
                    stmt="m(**batch)", globals={"m": m, "batch": batch}, num_threads=threads
                )
                times[name] += list(timer.blocked_autorange(min_run_time=min_run_time).times)
    finally:
        torch.set_num_threads(before)
    bsz = int(next(iter(batch.values())).shape[0])
    out = {}
    for name, ts in times.items():
        t = torch.tensor(ts, dtype=torch.float64) * 1000
        q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        out[name] = Latency(name, bsz, threads, float(q[1]), float(q[2] - q[0]), len(ts))
    return out
