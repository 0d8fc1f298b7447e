"""SparseGPT: one-shot pruning with OBS weight reconstruction (Frantar & Alistarh 2023, Alg. 1 / Sec. 3).

A faithful port of IST-DASLab/sparsegpt ``SparseGPT.fasterprune`` (and llm-compressor's
``sparsify_weight``):

1. dead inputs (``H_jj == 0``) get ``H_jj = 1`` and their weight column is zeroed;
2. ``H`` is dampened by ``dampening · mean(diag H)`` and ``Hinv`` = upper Cholesky factor of ``H⁻¹``
   (Sec. 3.3 "Hessian synchronisation"; :func:`inverse_cholesky_upper`, which raises the dampening if
   the factorisation fails);
3. columns are processed left to right in blocks of ``block_size`` (Sec. 3.4 "lazy batch updates"). In
   each column ``i`` the pruned entries' error ``err = (w - q) / Hinv_ii`` is propagated to the remaining
   columns of the block with the OBS update ``W[:, i:] -= err ⊗ Hinv[i, i:]`` (Hassibi & Stork 1993;
   Alg. 1 line "E ← (W - M)/[H⁻¹]_jj; W ← W - E·H⁻¹"), and after the block the accumulated errors
   update all later columns at once: ``W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]``.

Mask selection (Sec. 3.3 "adaptive mask selection"): the OBS saliency is ``w² / [H⁻¹]_jj²`` using the
diagonal of the Cholesky factor as in the reference code. Unstructured masks are chosen once per block
from the block's current weights. The reference code picks a per-block quantile threshold
(``tmp <= thresh``), which prunes ``int(block numel · s)`` weights or more on ties, so the layer total
is off by rounding (and by ties). Here each block prunes exactly its share from
:func:`split_prune_counts` (cumulative rounding over flat offsets, blocks differ from
``s · block numel`` by at most one and the shares sum to exactly ``num_to_prune(W.numel(), s)``), with
ties broken by index. N:M masks are chosen at every column ``i`` with ``i % m == 0`` for the next ``m``
columns, from the weights already updated by the preceding columns (Sec. 3.3 "semi-structured").
"""

from __future__ import annotations

import torch
from torch import Tensor

from .hessian import inverse_cholesky_upper
from .masks import Pattern, nm_prune_mask, split_prune_counts, topk_prune_mask
from .result import PruneResult


def _check_inputs(W: Tensor, H: Tensor, pattern: Pattern, block_size: int) -> None:
    if W.dim() != 2:
        raise ValueError(f"W must be a (d_out, d_in) matrix, got shape {tuple(W.shape)}")
    d_in = W.shape[1]
    if H.shape != (d_in, d_in):
        raise ValueError(
            f"H must be (d_in, d_in) = {(d_in, d_in)} for W of shape {tuple(W.shape)}, got {tuple(H.shape)}"
        )
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if pattern.is_nm:
        assert pattern.m is not None
        if d_in % pattern.m != 0:
            raise ValueError(
                f"N:M pruning {pattern} needs d_in to be a multiple of {pattern.m}; "
                f"W has shape {tuple(W.shape)}"
            )
        if block_size % pattern.m != 0:
            raise ValueError(
                f"block_size ({block_size}) must be a multiple of M={pattern.m} for {pattern} "
                f"so that no N:M group straddles two blocks"
            )


def sparsegpt_prune(
    W: Tensor, H: Tensor, pattern: Pattern, block_size: int = 128, dampening: float = 0.01
) -> PruneResult:
    """Prune ``W`` (``d_out × d_in``) with SparseGPT on the Hessian ``H = 2/N · XᵀX`` (``d_in × d_in``).

    Works in float32 on ``W``'s device and returns the weight in ``W``'s dtype; neither ``W`` nor ``H``
    is modified. Sparsity 0 returns ``W`` unchanged (bitwise) without any solve (``damp`` is then None).
    Unstructured sparsity prunes exactly ``num_to_prune(W.numel(), sparsity)`` weights; N:M keeps at most
    ``n`` of every ``m`` consecutive input columns per row.
    """
    _check_inputs(W, H, pattern, block_size)
    rows, cols = W.shape
    if not pattern.is_nm and pattern.sparsity == 0:
        return PruneResult(weight=W.detach().clone(), mask=torch.ones_like(W, dtype=torch.bool), damp=None)

    Wf = W.detach().float().clone()
    Hf = H.detach().to(device=W.device, dtype=torch.float32)
    dead = Hf.diagonal() == 0
    Wf[:, dead] = 0
    Hinv, damp = inverse_cholesky_upper(Hf, dampening)  # dampen() sets H_jj = 1 for the dead inputs

    nm = pattern.is_nm
    n, m = (pattern.n or 0), (pattern.m or 0)
    keep = torch.ones(rows, cols, dtype=torch.bool, device=W.device)
    starts = list(range(0, cols, block_size))
    block_counts = (
        []
        if nm
        else split_prune_counts([rows * (min(i1 + block_size, cols) - i1) for i1 in starts], pattern.sparsity)
    )

    for b, i1 in enumerate(starts):
        i2 = min(i1 + block_size, cols)
        count = i2 - i1
        W1 = Wf[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = Hinv1.diagonal()
        if nm:
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        else:
            keep1 = topk_prune_mask(W1.square() / d1.square().unsqueeze(0), block_counts[b])

        for i in range(count):
            if nm and i % m == 0:
                scores = W1[:, i : i + m].square() / d1[i : i + m].square().unsqueeze(0)
                keep1[:, i : i + m] = nm_prune_mask(scores, n, m)
            w = W1[:, i]
            q = w.masked_fill(~keep1[:, i], 0)
            err = (w - q) / d1[i]
            # rank-1 OBS update as a (rows x 1)(1 x rest) matmul: the same result as addr_, but through the
            # GEMM kernel rather than the BLAS-2 one
            W1[:, i + 1 :].addmm_(err.unsqueeze(1), Hinv1[i, i + 1 :].unsqueeze(0), alpha=-1.0)
            W1[:, i] = q
            Err1[:, i] = err

        Wf[:, i1:i2] = W1
        keep[:, i1:i2] = keep1
        if i2 < cols:
            Wf[:, i2:].addmm_(Err1, Hinv[i1:i2, i2:], alpha=-1.0)

    weight = Wf.masked_fill_(~keep, 0).to(W.dtype)
    return PruneResult(weight=weight, mask=keep, damp=damp)
