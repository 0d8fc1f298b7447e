"""RAKP-style pruning: rectify the weight for the pruned model's shifted inputs, then prune with SparseGPT.

Li et al. 2023 (arXiv:2310.13191, Sec. 4, "adaptive rectification" / cumulative error). When layers are
pruned one after another, layer ``ℓ`` of the pruned model sees inputs ``X̃`` (``tokens × d_in``) that
differ from the dense model's ``X``. The right target is the dense output, so the objective is

    min_Ŵ ||X Wᵀ - X̃ Ŵᵀ||²   (Ŵ sparse).

Let ``W*`` be the least-squares solution of ``min ||X Wᵀ - X̃ W*ᵀ||²``, i.e. ``X̃ᵀ X̃ W*ᵀ = X̃ᵀ X Wᵀ``.
Its residual is orthogonal to the column space of ``X̃``, so the objective splits (Pythagoras) into

    ||X Wᵀ - X̃ W*ᵀ||²  +  ||X̃ (W* - Ŵ)ᵀ||²,

a constant plus an ordinary layer-wise pruning problem for ``W*`` on the pruned stream's Hessian
``H̃ = 2/N · X̃ᵀX̃``, which SparseGPT/OBS solves. Hence: rectify, then prune ``W*`` with OBS on ``H̃``.

With ``cross = 2/N · (X - X̃)ᵀ X̃`` (same 2/N scale as ``H̃``), ``W* = W + Δ`` with

    Δ = W · cross · (H̃ + λ I)⁻¹,    λ = ridge · mean(diag H̃)

(in the paper's ``d_in × tokens`` notation ``Δ = W (X − X̃) X̃ᵀ (X̃ X̃ᵀ + λI)⁻¹``). The ridge acts on the
correction, not on ``W*``, so identical streams (``X̃ = X``, ``cross = 0``) give exactly ``Δ = 0`` and
RAKP reduces to SparseGPT.

The correction is applied with a step ``alpha``: ``W* = W + alpha · Δ``; ``alpha = 1`` with a small
``ridge`` is the paper's full refit. On SmolLM2-135M at 2:4 a partial step gives perplexity 38.45 at
``alpha = 0.25`` and 38.99 at 0.5 against 49.81 for SparseGPT (``benchmarks/results/smollm2.json``, rows
``rakp@2:4/batch8``, ``rakp@2:4/alpha0.5/batch8``, ``sparsegpt@2:4/batch8``; made by
``benchmarks/bench_smollm2.py --methods rakp --patterns 2:4 --calib-batch-size 8 --alpha A``). On the
encoder, α, ridge, the head refit (:mod:`robustprune.pruning.rakp_head`) and the calibration size are
compared in ``benchmarks/results/rakp_paper_encoder.json`` (``benchmarks/rakp_ablation.py``).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from .masks import Pattern
from .result import PruneResult
from .sparsegpt import sparsegpt_prune

logger = logging.getLogger(__name__)


def rakp_correction(W: Tensor, H_pruned: Tensor, cross: Tensor, ridge: float) -> Tensor:
    """The rectification ``Δ = W · cross · (H̃ + λI)⁻¹`` with ``λ = ridge · mean(diag H̃)`` (RAKP Sec. 4).

    ``W`` is ``d_out × d_in``; ``H_pruned`` (``2/N · X̃ᵀX̃``) and ``cross`` (``2/N · (X - X̃)ᵀX̃``) are
    ``d_in × d_in``. Solved through a Cholesky factorisation of the symmetric ``H̃ + λI`` (no explicit
    inverse). Dead inputs (``H̃_jj == 0``, hence ``X̃_j = 0`` and a zero ``cross`` column) get a unit
    diagonal and so a zero correction column. If the factorisation fails (``ridge == 0`` with a singular
    ``H̃``), a growing jitter is added with a WARNING. ``cross == 0`` returns exact zeros. Returns
    float32 on ``W``'s device.
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a (d_out, d_in) matrix, got shape {tuple(W.shape)}")
    d_in = W.shape[1]
    for name, mat in (("H_pruned", H_pruned), ("cross", cross)):
        if mat.shape != (d_in, d_in):
            raise ValueError(
                f"{name} must be (d_in, d_in) = {(d_in, d_in)} for W of shape {tuple(W.shape)}, "
                f"got {tuple(mat.shape)}"
            )
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if not (bool(torch.isfinite(H_pruned).all()) and bool(torch.isfinite(cross).all())):
        raise ValueError("RAKP correction: H_pruned or cross contains NaN/Inf")
    C = cross.detach().to(device=W.device, dtype=torch.float32)
    if not bool(C.any()):
        return torch.zeros(W.shape, dtype=torch.float32, device=W.device)

    A = H_pruned.detach().to(device=W.device, dtype=torch.float32).clone()
    diag = A.diagonal()
    diag[diag == 0] = 1.0
    scale = float(diag.mean())
    diag.add_(ridge * scale)
    rhs = C.T @ W.detach().float().T  # (d_in, d_out): Δᵀ = A⁻¹ crossᵀ Wᵀ since A is symmetric
    eye = torch.eye(d_in, dtype=torch.float32, device=A.device)
    jitters = [0.0] + [max(scale, 1e-12) * 10.0**e for e in (-6, -4, -2, 0)]
    for k, jitter in enumerate(jitters):
        if jitter:
            logger.warning(
                "RAKP correction: Cholesky of H_pruned + %g·I failed; retrying with jitter %g",
                ridge * scale + jitters[k - 1],
                ridge * scale + jitter,
            )
        L, info = torch.linalg.cholesky_ex(A + jitter * eye if jitter else A)
        if int(info) == 0:
            delta = torch.cholesky_solve(rhs, L).T
            if bool(torch.isfinite(delta).all()):
                return delta.contiguous()
    raise ValueError(
        f"RAKP correction: H_pruned of shape {tuple(H_pruned.shape)} could not be factorised even "
        f"with jitter {jitters[-1]:g}"
    )


def rakp_prune(
    W: Tensor,
    H_pruned: Tensor,
    cross: Tensor | None,
    pattern: Pattern,
    alpha: float = 1.0,
    ridge: float = 1e-4,
    block_size: int = 128,
    dampening: float = 0.01,
) -> PruneResult:
    """Rectify ``W* = W + alpha · Δ`` (:func:`rakp_correction`), then ``sparsegpt_prune(W*, H_pruned, ...)``.

    ``cross`` None, all zero, or ``alpha == 0`` gives exactly (bitwise) ``sparsegpt_prune(W, H_pruned,
    ...)``. The returned weight has ``W``'s dtype and device; ``delta_norm`` is ``||alpha·Δ||_F / ||W||_F``.
    At sparsity 0 the rectified ``W*`` is returned (rectification does not depend on pruning).
    """
    if cross is None or alpha == 0 or not bool(cross.any()):
        return sparsegpt_prune(W, H_pruned, pattern, block_size=block_size, dampening=dampening)
    delta = rakp_correction(W, H_pruned, cross, ridge)
    step = alpha * delta
    w_norm = float(W.detach().float().norm())
    delta_norm = float(step.norm()) / w_norm if w_norm > 0 else 0.0
    result = sparsegpt_prune(
        W.detach().float() + step, H_pruned, pattern, block_size=block_size, dampening=dampening
    )
    return PruneResult(
        weight=result.weight.to(W.dtype), mask=result.mask, damp=result.damp, delta_norm=delta_norm
    )
