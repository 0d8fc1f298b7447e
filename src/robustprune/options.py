"""From validated ``params.yaml`` sections to the solvers' option dataclasses (pure; no IO).

The pipeline's tasks and the benchmarks build their :class:`PruneOptions` and :class:`SDSOptions` here,
so a profile means the same run whichever of them executes it.
"""

from __future__ import annotations

from robustprune.config import LMConfig, PruneConfig, SdsConfig, parse_sparsity
from robustprune.pruning import Pattern
from robustprune.pruning.sequential import PruneOptions
from robustprune.sds import SDSOptions


def prune_options(cfg: PruneConfig | LMConfig, method: str, sparsity: str) -> PruneOptions:
    """Options for one ``method`` x ``sparsity`` (``"0.5"``, ``"2:4"``) from the ``prune`` or ``lm`` section.

    Both sections carry the same solver fields; only ``prune`` restricts the pruned Linears (``modules``).
    """
    s, n, m = parse_sparsity(sparsity)
    return PruneOptions(
        method=method,
        pattern=Pattern(sparsity=s, n=n, m=m),
        block_size=cfg.block_size,
        dampening=cfg.dampening,
        alpha=None if cfg.rakp.alpha == "adaptive" else cfg.rakp.alpha,
        alpha_grid=tuple(cfg.rakp.alpha_grid),
        holdout_fraction=cfg.rakp.holdout_fraction,
        alpha_criterion=cfg.rakp.alpha_criterion,
        ridge=cfg.rakp.ridge,
        next_input=cfg.rakp.next_input,
        modules=cfg.modules if isinstance(cfg, PruneConfig) else None,
        track_dense=cfg.track_dense,
    )


def sds_options(cfg: SdsConfig) -> SDSOptions:
    """SDS's reactivation / adjustment options from an ``sds`` section (``sds:`` or ``lm.sds:``)."""
    return SDSOptions(
        l1=cfg.l1,
        regularizer=cfg.regularizer,
        group_size=cfg.group_size,
        steps=cfg.steps,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        init=cfg.init,
        final_adjust_steps=cfg.final_adjust_steps,
        adjust_lr=cfg.adjust_lr,
    )
