"""Magnitude pruning: drop the weights of smallest ``|W_ij|`` (the classic baseline; no weight update)."""

from __future__ import annotations

from torch import Tensor

from .masks import Pattern, nm_prune_mask, num_to_prune, topk_prune_mask
from .result import PruneResult


def magnitude_prune(W: Tensor, pattern: Pattern) -> PruneResult:
    """Prune ``W`` (``d_out × d_in``) by magnitude.

    Unstructured: one threshold over the whole layer, i.e. exactly ``num_to_prune(W.numel(), sparsity)``
    smallest ``|W_ij|`` are zeroed (ties by index). N:M: in every group of ``m`` consecutive input columns
    of a row the ``n`` largest ``|W_ij|`` are kept. The kept weights are not changed.
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a (d_out, d_in) matrix, got shape {tuple(W.shape)}")
    scores = W.detach().float().abs()
    if pattern.is_nm:
        assert pattern.n is not None and pattern.m is not None
        mask = nm_prune_mask(scores, pattern.n, pattern.m)
    else:
        mask = topk_prune_mask(scores, num_to_prune(W.numel(), pattern.sparsity))
    return PruneResult(weight=W.detach().masked_fill(~mask, 0), mask=mask, damp=None)
