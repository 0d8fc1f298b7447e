"""Layer-wise pruning kernels: magnitude, Wanda, SparseGPT and RAKP, plus their shared statistics.

Conventions: a Linear weight ``W`` is ``(d_out, d_in)``; calibration inputs ``X`` are ``(tokens, d_in)``;
the Hessian is ``H = 2/N · XᵀX``; masks are bool, shaped like ``W``, True = KEEP.
"""

from __future__ import annotations

from torch import Tensor

from robustprune.registry import MAGNITUDE, SPARSEGPT, WANDA
from robustprune.registry import METHODS as _REGISTERED

from .hessian import accumulate_cross, accumulate_xtx, dampen, inverse_cholesky_upper
from .magnitude import magnitude_prune
from .masks import (
    Pattern,
    nm_prune_mask,
    num_to_prune,
    parse_pattern,
    rowwise_prune_mask,
    split_prune_counts,
    topk_prune_mask,
)
from .rakp import rakp_correction, rakp_prune
from .result import PruneResult, output_error, target_error
from .sparsegpt import sparsegpt_prune
from .wanda import wanda_prune

METHODS = tuple(_REGISTERED)  # robustprune.registry


def prune_weight(
    method: str,
    W: Tensor,
    pattern: Pattern,
    H: Tensor | None = None,
    cross: Tensor | None = None,
    *,
    block_size: int = 128,
    dampening: float = 0.01,
    alpha: float = 1.0,
    ridge: float = 1e-4,
) -> PruneResult:
    """Prune one weight with the named method.

    ``H`` is the layer Hessian (for RAKP: the pruned stream's ``H̃``), required by every method except
    magnitude; ``cross`` is RAKP's ``2/N · (X - X̃)ᵀX̃`` (None = identical streams). Unknown methods and a
    missing ``H`` raise ``ValueError``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    if method == MAGNITUDE.name:
        return magnitude_prune(W, pattern)
    if H is None:
        raise ValueError(
            f"pruning method {method!r} needs the layer Hessian H (calibration statistics); got None"
        )
    if method == WANDA.name:
        return wanda_prune(W, H, pattern)
    if method == SPARSEGPT.name:
        return sparsegpt_prune(W, H, pattern, block_size=block_size, dampening=dampening)
    return rakp_prune(
        W, H, cross, pattern, alpha=alpha, ridge=ridge, block_size=block_size, dampening=dampening
    )


__all__ = [
    "METHODS",
    "Pattern",
    "PruneResult",
    "accumulate_cross",
    "accumulate_xtx",
    "dampen",
    "inverse_cholesky_upper",
    "magnitude_prune",
    "nm_prune_mask",
    "num_to_prune",
    "output_error",
    "parse_pattern",
    "prune_weight",
    "rakp_correction",
    "rakp_prune",
    "rowwise_prune_mask",
    "sparsegpt_prune",
    "split_prune_counts",
    "target_error",
    "topk_prune_mask",
    "wanda_prune",
]
