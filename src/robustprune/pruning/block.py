"""One block's pruning step: collect per-Linear statistics, prune, run the pruned block, report.

SparseGPT (Frantar & Alistarh 2023, Sec. 3 and App. "sequential pruning") prunes one transformer block
at a time; the inputs of block l come from the model whose blocks < l are already pruned, so each block
compensates the error made before it. RAKP (Li et al. 2023, Sec. 4.2) keeps two streams: the pruned one
(X̃, what the layer will see) and the dense one (X, what the dense model computes) and asks each layer
to reproduce the dense output W·X from X̃. :func:`prune_block` therefore runs both streams side by side on
the same calibration batches (token-aligned, :mod:`robustprune.pruning.streams`), which also gives every
method a "drift" figure: the relative error of the block's output against the dense model's.

Within a block (:mod:`robustprune.pruning.layerwise`) every Linear's statistics are collected from the
block's dense weights, then all of them are pruned, then the pruned block is run to produce the next
block's inputs. RAKP's α per block comes from :mod:`robustprune.pruning.rakp_alpha`; with
``rakp.refit_head`` the classifier head is rectified after the last block (:func:`finish_head`,
:mod:`robustprune.pruning.rakp_head`). The blocks are driven in order by
:mod:`robustprune.pruning.branch`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from robustprune.modeling import find_blocks, head_linears, linear_groups
from robustprune.pruning.layerwise import (
    LayerReport,
    LayerStats,
    PruneOptions,
    collect_stats,
    prune_linears,
    stats_plan,
)
from robustprune.pruning.rakp_alpha import alpha_head, block_alpha, select_alpha
from robustprune.pruning.rakp_head import HeadReport, refit_head
from robustprune.pruning.streams import BlockInputs, block_forward, relative_error
from robustprune.registry import RAKP


@dataclass
class BlockReport:
    index: int
    layers: list[LayerReport] = field(default_factory=list)
    output_error: float = 0.0  # ‖Y_dense − Y_pruned‖² / ‖Y_dense‖² at the block's output
    seconds: float = 0.0
    alpha: float | None = None  # RAKP: the rectification strength used for this block
    alpha_errors: dict[float, float] = field(default_factory=dict)  # adaptive: held-out error per candidate


def check_options(model: nn.Module, opts: PruneOptions) -> None:
    """Fail before any forward pass when ``opts`` asks for a head ``model`` does not have (the "output"
    criterion, the head refit)."""
    alpha_head(model, opts)
    if opts.method == RAKP.name and opts.rakp.refit_head:
        head_linears(model)


def block_weights(model: nn.Module, index: int, opts: PruneOptions) -> dict[str, torch.Tensor]:
    """Block ``index``'s prunable weights (those ``opts.modules`` selects) by full name, on the CPU."""
    block = find_blocks(model)[index]
    return {
        name: lin.weight.data.cpu()
        for g in linear_groups(model, block, opts.modules)
        for name, lin in g.items()
    }


@torch.inference_mode()
def prune_block(
    model: nn.Module, index: int, inputs: BlockInputs, opts: PruneOptions
) -> tuple[BlockInputs, dict[str, torch.Tensor], BlockReport]:
    """Prune block ``index`` in place; return the next block's inputs, the masks (by full name) and a report.

    Reads only block ``index`` (and, for the adaptive α's "model" / "output" criteria, the blocks after
    it, still dense, and the head): the blocks before it are already folded into ``inputs``.
    """
    t0 = time.perf_counter()
    blocks = find_blocks(model)
    block = blocks[index]
    groups = linear_groups(model, block, opts.modules)
    linears = {name: lin for g in groups for name, lin in g.items()}
    report = BlockReport(index=index, alpha=block_alpha(opts, index, len(blocks)))
    plan = stats_plan(opts)
    if opts.adaptive_alpha:
        later = blocks[index + 1 :]
        head = alpha_head(model, opts)
        report.alpha, report.alpha_errors = select_alpha(block, groups, inputs, opts, index, later, head)
    stats, dense_out = collect_stats(block, groups, inputs, plan=plan)
    masks, report.layers = prune_linears(linears, stats, opts, index, report.alpha or 0.0)
    pruned_out = [block_forward(block, x, e) for x, e in zip(inputs.pruned, inputs.extras, strict=True)]
    report.output_error = (
        relative_error(dense_out, pruned_out, inputs.token_mask) if plan.dense else float("nan")
    )
    report.seconds = time.perf_counter() - t0
    next_pruned = dense_out if opts.rakp.next_input == "dense" else pruned_out
    nxt = BlockInputs(pruned=next_pruned, dense=dense_out, extras=inputs.extras, token_mask=inputs.token_mask)
    return nxt, masks, report


def prune_block_weights(
    model: nn.Module, index: int, opts: PruneOptions
) -> tuple[dict[str, torch.Tensor], BlockReport]:
    """Prune block ``index`` in place from its weights alone (``stats_plan(opts) == NO_STATS``: magnitude
    without layer reports reads no calibration data); the masks and a report without an output error."""
    t0 = time.perf_counter()
    block = find_blocks(model)[index]
    linears = {n: lin for g in linear_groups(model, block, opts.modules) for n, lin in g.items()}
    report = BlockReport(index=index, output_error=float("nan"))
    masks, report.layers = prune_linears(linears, {n: LayerStats() for n in linears}, opts, index, 0.0)
    report.seconds = time.perf_counter() - t0
    return masks, report


def finish_head(
    model: nn.Module, last: BlockInputs, opts: PruneOptions, blocks: Sequence[BlockReport]
) -> HeadReport | None:
    """After the last block: RAKP's head refit when ``rakp.refit_head`` (else None), with the last block's α.

    ``last`` holds the last block's outputs on both streams (what :func:`prune_block` returned for it).
    """
    if opts.method != RAKP.name or not opts.rakp.refit_head:
        return None
    alpha = blocks[-1].alpha if blocks and blocks[-1].alpha is not None else 0.0
    return refit_head(model, last.pruned, last.dense, last.token_mask, alpha=alpha, ridge=opts.rakp.ridge)
