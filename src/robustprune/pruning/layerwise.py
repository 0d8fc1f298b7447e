"""Inside one block: the solver options, the per-Linear statistics pass and the pruning of its Linears.

Every Linear's statistics are collected from the block's dense weights (as in the reference SparseGPT
code, Frantar & Alistarh 2023, App. "sequential pruning"), then all of them are pruned. Linears of one
group read the same input (q/k/v; gate/up), so each group is hooked once and its statistics shared.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustprune.pruning import Pattern, output_error, prune_weight, target_error
from robustprune.pruning.hessian import accumulate_cross, accumulate_diag, accumulate_xtx
from robustprune.pruning.streams import BlockInputs, Stop, block_forward
from robustprune.registry import METHODS, RAKP

ALPHA_CRITERIA = ("block", "model", "output")
NEXT_INPUTS = ("pruned", "dense")


@dataclass(frozen=True)
class RakpOptions:
    """RAKP's own options (Li et al. 2023, Sec. 4.2): how strongly, and where, the weights are rectified.

    ``alpha`` is the step of the rectification ``W* = W + α·Δ`` (:func:`robustprune.pruning.rakp_prune`);
    None = chosen per block on held-out batches (:mod:`robustprune.pruning.rakp_alpha`). ``alpha_depth``
    (first block's α, last block's α), linear in between, overrides ``alpha``. ``ridge`` is the damping of
    the correction as a fraction of ``mean(diag H̃)``. ``refit_head`` also rectifies the classifier head's
    Linears after the last block (:mod:`robustprune.pruning.rakp_head`). ``next_input`` is an ablation
    switch read for every method: which stream feeds the next block's "pruned" input.
    """

    alpha: float | None = 1.0
    alpha_depth: tuple[float, float] | None = None
    alpha_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    holdout_fraction: float = 0.25  # adaptive α: share of calibration batches held out to judge it
    # adaptive α judged at the block's output ("block"), at the model's last block ("model") or by the
    # KL divergence of the model's output distribution from the dense model's ("output")
    alpha_criterion: str = "block"
    output_stride: int = 8  # "output": judge every k-th token position of a causal LM (the head is wide)
    ridge: float = 1e-4
    refit_head: bool = False  # the config turns it on (params.yaml: the paper refits the head)
    next_input: str = "pruned"

    def __post_init__(self) -> None:
        if self.alpha_criterion not in ALPHA_CRITERIA:
            raise ValueError(f"alpha_criterion must be one of {ALPHA_CRITERIA}, got {self.alpha_criterion!r}")
        if self.next_input not in NEXT_INPUTS:
            raise ValueError(f"next_input must be one of {NEXT_INPUTS}, got {self.next_input!r}")


@dataclass(frozen=True)
class PruneOptions:
    """Solver options shared by every layer of one pruning run."""

    method: str
    pattern: Pattern
    block_size: int = 128
    dampening: float = 0.01
    track_dense: bool = True  # run the dense stream for every method (drift report); RAKP always does
    modules: str | None = None
    rakp: RakpOptions = field(default_factory=RakpOptions)

    @property
    def adaptive_alpha(self) -> bool:
        """RAKP with α chosen per block on held-out batches."""
        return self.method == RAKP.name and self.rakp.alpha is None and self.rakp.alpha_depth is None


@dataclass
class LayerReport:
    name: str
    error: float  # ‖(W − Ŵ)X̃‖² / ‖W X̃‖²: the layer's own reconstruction error
    target_error: float  # ‖W X − Ŵ X̃‖² / ‖W X‖²: against the dense model's output (cumulative)
    sparsity: float
    damp: float | None
    delta_norm: float
    seconds: float


@dataclass
class LayerStats:
    H: torch.Tensor | None = None  # 2/N X̃ᵀX̃, or only its diagonal (a vector) when that is all that is needed
    H_dense: torch.Tensor | None = None  # 2/N XᵀX (only to report the per-layer target error)
    cross: torch.Tensor | None = None  # 2/N (X − X̃)ᵀX̃
    n: int = 0


@dataclass(frozen=True)
class StatsPlan:
    """What one block's statistics pass computes (:func:`stats_plan` picks it from the options).

    ``hessian``: "full" (``H``), "diag" (its diagonal: Wanda without layer reports) or "none"
    (magnitude without layer reports: no pass at all); ``dense``: run the dense stream too (RAKP's cross
    term, the drift report, ``next_input = dense``); ``dense_hessian``: also ``H_dense``, only for the
    per-layer target error of the drift report.
    """

    hessian: str = "full"
    dense: bool = True
    dense_hessian: bool = True


NO_STATS = StatsPlan(hessian="none", dense=False, dense_hessian=False)


def stats_plan(opts: PruneOptions) -> StatsPlan:
    """The least work that ``opts`` needs: layer reports (``track_dense``) keep the full statistics."""
    report = opts.track_dense
    method = METHODS.get(opts.method)
    dense = report or (method is not None and method.dense_stream) or opts.rakp.next_input == "dense"
    hessian = "full" if report or method is None else method.statistics
    return StatsPlan(hessian=hessian, dense=dense, dense_hessian=report)


@torch.inference_mode()
def collect_stats(
    block: nn.Module,
    groups: Sequence[dict[str, nn.Linear]],
    inputs: BlockInputs,
    *,
    track_dense: bool = True,
    plan: StatsPlan | None = None,
) -> tuple[dict[str, LayerStats], list[torch.Tensor]]:
    """Per-Linear statistics, and the dense block's outputs (the next dense inputs; empty without them).

    ``plan`` (default: everything if ``track_dense``, else only ``H`` on the pruned stream) says what to
    build. The pruned stream's forward is cut short once every hooked group has seen its input (its output
    is not needed: the caller runs the pruned block afterwards): the hooks are pre-hooks, so the last
    hooked Linear itself (a Llama block's down projection, a fifth of its FLOPs at 512 tokens) and
    everything after it never run in this pass.
    """
    if plan is None:
        plan = StatsPlan() if track_dense else StatsPlan(dense=False, dense_hessian=False)
    shared = [LayerStats() for _ in groups]
    stats = {name: st for st, g in zip(shared, groups, strict=True) for name in g}
    if plan == NO_STATS:
        return stats, []
    seen: dict[int, torch.Tensor] = {}
    fired: set[int] = set()
    phase: dict[str, Any] = {"dense": True, "mask": None}

    def make_hook(gi: int) -> Callable:
        def hook(_mod: nn.Module, inp: tuple) -> None:  # a pre-hook: fires before the Linear computes
            mask = phase["mask"]  # None: no padding in this batch, so no copy is needed
            x = (inp[0].reshape(-1, inp[0].shape[-1]) if mask is None else inp[0][mask]).float()
            s = shared[gi]
            if phase["dense"]:
                seen[gi] = x
                return
            n = s.n
            if plan.hessian == "full":
                s.H, _ = accumulate_xtx(s.H, x, n)
            elif plan.hessian == "diag":
                s.H, _ = accumulate_diag(s.H, x, n)
            if plan.dense:
                x_dense = seen.pop(gi)
                if plan.dense_hessian:
                    s.H_dense, _ = accumulate_xtx(s.H_dense, x_dense, n)
                s.cross, _ = accumulate_cross(s.cross, x_dense, x, n)
            s.n = n + x.shape[0]
            fired.add(gi)
            if len(fired) == len(groups):
                raise Stop

        return hook

    handles = [next(iter(g.values())).register_forward_pre_hook(make_hook(gi)) for gi, g in enumerate(groups)]
    dense_out = []
    try:
        for i, (x_pruned, extra, mask) in enumerate(
            zip(inputs.pruned, inputs.extras, inputs.token_mask, strict=True)
        ):
            mask = None if bool(mask.all()) else mask  # (tokens,) selection of real tokens
            if plan.dense:
                phase.update(dense=True, mask=mask)
                dense_out.append(block_forward(block, inputs.dense[i], extra))
            phase.update(dense=False, mask=mask)
            fired.clear()
            with contextlib.suppress(Stop):
                block_forward(block, x_pruned, extra)
    finally:
        for h in handles:
            h.remove()
    return stats, dense_out


def prune_linears(
    linears: dict[str, nn.Linear],
    stats: dict[str, LayerStats],
    opts: PruneOptions,
    index: int,
    alpha: float,
) -> tuple[dict[str, torch.Tensor], list[LayerReport]]:
    """Prune every Linear of a block in place from its statistics; masks by full name and per-layer reports."""
    masks, reports = {}, []
    for name, lin in linears.items():
        t1 = time.perf_counter()
        s = stats[name]
        W = lin.weight.data
        try:
            res = prune_weight(
                opts.method,
                W,
                opts.pattern,
                H=s.H,
                cross=s.cross,
                block_size=opts.block_size,
                dampening=opts.dampening,
                alpha=alpha,
                ridge=opts.rakp.ridge,
            )
        except ValueError as e:
            raise ValueError(f"block {index}, layer {name!r} (weight {tuple(W.shape)}): {e}") from e
        err = output_error(W, res.weight, s.H) if s.H is not None and s.H.dim() == 2 else float("nan")
        terr = target_error(W, res.weight, s.H_dense, s.H, s.cross) if s.H_dense is not None else float("nan")
        lin.weight.data.copy_(res.weight)
        masks[f"{index}.{name}"] = res.mask.cpu()
        reports.append(
            LayerReport(
                name=name,
                error=err,
                target_error=terr,
                sparsity=1 - float(res.mask.float().mean()),
                damp=res.damp,
                delta_norm=res.delta_norm,
                seconds=time.perf_counter() - t1,
            )
        )
    return masks, reports
