"""The cubic sparsity schedule (Zhu & Gupta 2017), as movement pruning and CAP use it.

Within one stage of ``warmup + ramp + hold`` steps the sparsity is ``initial`` during the warm-up, then

    s(t) = final + (initial − final) · (1 − (t − warmup) / ramp)³      for warmup ≤ t < warmup + ramp

(the reference's ``schedule_threshold`` with the kept fraction 1 − s), then ``final`` for the hold. The
staged run walks 0 → s₁ → s₂ → …: stage k ramps from s_{k−1} to s_k; only the first stage has a dense
warm-up (movement scores accumulate before anything is pruned).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def cubic_sparsity(step: int, initial: float, final: float, warmup: int, ramp: int) -> float:
    """Sparsity at ``step`` (0-based) of a stage that goes from ``initial`` to ``final``."""
    if step < warmup:
        return initial
    if ramp <= 0 or step >= warmup + ramp:
        return final
    frac = 1.0 - (step - warmup) / ramp
    return final + (initial - final) * frac**3


@dataclass(frozen=True)
class Stage:
    """One stage of the staged run: ``index`` in the run, sparsity ``initial`` -> ``final``, its steps."""

    index: int
    initial: float
    final: float
    warmup: int
    ramp: int
    hold: int

    @property
    def steps(self) -> int:
        return self.warmup + self.ramp + self.hold

    def sparsity(self, step: int) -> float:
        return cubic_sparsity(step, self.initial, self.final, self.warmup, self.ramp)


def _per_stage(value: int | Sequence[int], n: int, what: str) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{what} has {len(value)} entries for {n} stages")
    return [int(v) for v in value]


def stages(
    sparsities: Sequence[float], warmup: int, ramp: int | Sequence[int], hold: int | Sequence[int]
) -> list[Stage]:
    """The staged run's stages: dense warm-up in the first only; each ramps from the previous target.

    ``ramp`` and ``hold`` are one step count for every stage or one per stage.
    """
    if any(b <= a for a, b in zip(sparsities, sparsities[1:], strict=False)):
        raise ValueError(f"sparsities must increase, got {list(sparsities)}")
    ramps = _per_stage(ramp, len(sparsities), "ramp")
    holds = _per_stage(hold, len(sparsities), "hold")
    out, prev = [], 0.0
    for i, s in enumerate(sparsities):
        out.append(Stage(i, prev, float(s), warmup if i == 0 else 0, ramps[i], holds[i]))
        prev = float(s)
    return out


def separate(
    sparsities: Sequence[float], warmup: int, ramp: int | Sequence[int], hold: int | Sequence[int]
) -> list[Stage]:
    """One independent run per sparsity (the reference: one run to one target): every stage starts dense,
    with the warm-up, and ramps from 0 to its own target."""
    ramps = _per_stage(ramp, len(sparsities), "ramp")
    holds = _per_stage(hold, len(sparsities), "hold")
    return [Stage(i, 0.0, float(s), warmup, ramps[i], holds[i]) for i, s in enumerate(sparsities)]


def schedule(
    sparsities: Sequence[float],
    warmup: int,
    ramp: int | Sequence[int],
    hold: int | Sequence[int],
    *,
    path: str = "staged",
    unit: int = 1,
) -> list[Stage]:
    """The stages of ``cap.path`` (``staged`` | ``separate``) with lengths counted in units of ``unit`` steps
    (1: ``cap.length_unit: steps``; the steps of one epoch: ``epochs``)."""
    if unit < 1:
        raise ValueError(f"a length unit is at least one step, got {unit}")

    def times(v: int | Sequence[int]) -> int | list[int]:
        return v * unit if isinstance(v, int) else [x * unit for x in v]

    if path == "staged":
        return stages(sparsities, warmup * unit, times(ramp), times(hold))
    if path == "separate":
        return separate(sparsities, warmup * unit, times(ramp), times(hold))
    raise ValueError(f"cap.path {path!r} is not one of ['staged', 'separate']")


def epoch_steps(n_examples: int, batch_size: int, bucket: int = 50) -> int:
    """Optimiser steps in one epoch of ``n_examples``: the batches of
    :func:`robustprune.finetune.length_bucketed_batches`, window by window of ``bucket`` batches (a window
    holds whole batches, so only the last batch of the epoch is partial: ceil(n / batch_size))."""
    if n_examples < 1 or batch_size < 1:
        raise ValueError(f"an epoch needs examples and a batch size, got {n_examples} and {batch_size}")
    window = batch_size * bucket
    return sum(-(-min(window, n_examples - s) // batch_size) for s in range(0, n_examples, window))
