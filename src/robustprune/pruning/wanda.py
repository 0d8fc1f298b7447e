"""Wanda: prune by weight magnitude times input-activation norm (Sun et al. 2023, Sec. 3, eq. 1).

The score of weight ``W_ij`` is ``|W_ij| · ||X_j||₂`` where ``X_j`` is input feature ``j`` over all
calibration tokens. Since ``H = 2/N · XᵀX``, ``||X_j||₂ = sqrt(N/2 · H_jj)``; the constant factor is
irrelevant because scores are only compared within an output row (per-output comparison group, Sec. 3).
No weight update.
"""

from __future__ import annotations

from torch import Tensor

from .masks import Pattern, nm_prune_mask, rowwise_prune_mask
from .result import PruneResult


def wanda_prune(W: Tensor, H: Tensor, pattern: Pattern) -> PruneResult:
    """Prune ``W`` (``d_out × d_in``) with Wanda scores ``|W_ij| · sqrt(H_jj)``.

    ``H`` is the layer Hessian or only its diagonal (a ``d_in`` vector: all Wanda reads, and O(N·d)
    to accumulate instead of O(N·d²)).

    Unstructured: the lowest scores of every output row are pruned, exactly
    ``num_to_prune(W.numel(), sparsity)`` in the layer: when ``sparsity · d_in`` is not an integer the
    rounding remainder is spread over the rows by cumulative rounding (:func:`split_prune_counts`), so
    rows prune ``floor`` or ``ceil`` of ``sparsity · d_in`` (the reference code prunes ``int(...)`` per
    row and so misses the layer count). N:M: the ``n`` highest scores of every group of ``m`` input columns.
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a (d_out, d_in) matrix, got shape {tuple(W.shape)}")
    d_in = W.shape[1]
    if H.shape not in ((d_in, d_in), (d_in,)):
        raise ValueError(
            f"H must be (d_in, d_in) = {(d_in, d_in)} or its diagonal ({d_in},) for W of shape "
            f"{tuple(W.shape)}, got {tuple(H.shape)}"
        )
    diag = H.detach().float()
    diag = diag if diag.dim() == 1 else diag.diagonal()
    col_norm = diag.clamp_min(0).sqrt().to(W.device)
    scores = W.detach().float().abs() * col_norm.unsqueeze(0)
    if pattern.is_nm:
        assert pattern.n is not None and pattern.m is not None
        mask = nm_prune_mask(scores, pattern.n, pattern.m)
    else:
        mask = rowwise_prune_mask(scores, pattern.sparsity, exact_total=True)
    return PruneResult(weight=W.detach().masked_fill(~mask, 0), mask=mask, damp=None)
