"""The layer-by-layer driver in memory: capture block inputs, prune every block in order, move on.

SparseGPT (Frantar & Alistarh 2023, Sec. 3 and App. "sequential pruning") prunes one transformer block
at a time; the inputs of block l come from the model whose blocks < l are already pruned, so each block
compensates the error made before it; RAKP (Li et al. 2023, Sec. 4.2) also tracks the dense model's
stream. One block's step is :mod:`robustprune.pruning.block`; :func:`prune_model` is the resumable
driver of :mod:`robustprune.pruning.branch` with nothing leaving the process (a
:class:`~robustprune.pruning.branch.MemoryStore`), the same driver the prune stage runs on disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from robustprune.interrupt import raise_if_stopped
from robustprune.pruning.block import BlockReport, check_options, finish_head, prune_block
from robustprune.pruning.branch import Branch, MemoryStore, PruneOutcome
from robustprune.pruning.layerwise import (
    LayerReport,
    PruneOptions,
    RakpOptions,
    StatsPlan,
    collect_stats,
    stats_plan,
)
from robustprune.pruning.rakp_alpha import depth_alpha, select_alpha
from robustprune.pruning.rakp_head import HeadReport
from robustprune.pruning.streams import BlockInputs, block_forward, capture_block_inputs

__all__ = [
    "BlockInputs",
    "BlockReport",
    "HeadReport",
    "LayerReport",
    "PruneOptions",
    "PruneOutcome",
    "RakpOptions",
    "StatsPlan",
    "block_forward",
    "capture_block_inputs",
    "check_options",
    "collect_stats",
    "depth_alpha",
    "finish_head",
    "prune_block",
    "prune_model",
    "select_alpha",
    "stats_plan",
]


def prune_model(
    model: nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    opts: PruneOptions,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> PruneOutcome:
    """Prune every block of ``model`` in place, in order (the in-memory form of the pipeline's prune stage).

    Magnitude pruning without layer reports reads no calibration data: no forward pass is run at all.
    """
    branch = Branch(lambda: model, opts, MemoryStore(), device)
    num_blocks = branch.start(batches)  # a missing head fails before any forward pass
    for i in tqdm(range(num_blocks), desc=f"prune {opts.method}", disable=not progress):
        raise_if_stopped()  # SIGTERM / SIGINT: stop between blocks (robustprune.interrupt)
        branch.run_block(i)
    return branch.assemble()[1]
