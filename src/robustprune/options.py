"""From validated ``params.yaml`` sections to the solvers' option dataclasses (pure; no IO).

The pipeline's tasks and the benchmarks build their :class:`PruneOptions` and :class:`SDSOptions` here,
so a profile means the same run whichever of them executes it.
"""

from __future__ import annotations

from robustprune.config import LMConfig, SdsConfig, parse_sparsity
from robustprune.pruning import Pattern
from robustprune.pruning.sequential import PruneOptions
from robustprune.sds import SDSOptions


def lm_prune_options(lm: LMConfig, method: str, sparsity: str) -> PruneOptions:
    """The causal-LM track's options for one ``method`` x ``sparsity`` (``"0.5"``, ``"2:4"``)."""
    s, n, m = parse_sparsity(sparsity)
    return PruneOptions(
        method=method,
        pattern=Pattern(sparsity=s, n=n, m=m),
        block_size=lm.block_size,
        dampening=lm.dampening,
        alpha=None if lm.rakp.alpha == "adaptive" else lm.rakp.alpha,
        alpha_grid=tuple(lm.rakp.alpha_grid),
        holdout_fraction=lm.rakp.holdout_fraction,
        alpha_criterion=lm.rakp.alpha_criterion,
        ridge=lm.rakp.ridge,
        next_input=lm.rakp.next_input,
        track_dense=lm.track_dense,
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
