"""Calibration statistics (layer Hessian, RAKP cross term) and the dampened inverse Cholesky factor.

Notation: calibration inputs ``X`` are ``(tokens, d_in)``; the layer-wise reconstruction loss
``||W Xᵀ - Ŵ Xᵀ||²`` has Hessian ``H = 2/N · XᵀX`` (SparseGPT, Frantar & Alistarh 2023, Sec. 3; OBS,
Hassibi & Stork 1993). All statistics are accumulated in float32 as running means, so batches of any
size can be streamed without the sum growing with ``N``.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def _as_tokens(x: Tensor) -> Tensor:
    """Flatten every leading dim: ``(..., d_in) -> (tokens, d_in)`` in float32."""
    if x.dim() < 1:
        raise ValueError(f"calibration inputs must have a feature dimension, got shape {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-1]).float()


def _running_update(
    acc: Tensor | None, update: Tensor, tokens: int, n_seen: int, d_in: int
) -> tuple[Tensor, int]:
    """Blend ``acc`` (a mean over ``n_seen`` tokens) with ``update`` (a raw sum over ``tokens`` tokens)."""
    if acc is None:
        acc = torch.zeros(d_in, d_in, dtype=torch.float32, device=update.device)
    elif acc.shape != (d_in, d_in):
        raise ValueError(f"accumulator has shape {tuple(acc.shape)}, inputs have d_in={d_in}")
    if tokens == 0:
        return acc.float(), n_seen
    total = n_seen + tokens
    new = torch.add(acc.float() * (n_seen / total), update.to(acc.device), alpha=2.0 / total)
    return new, total


def _gram_block(d: int) -> int:
    """Stripe width for :func:`gram`: 0 (plain product) below d = 512, two stripes up to 1024, else 384."""
    if d < 512:
        return 0
    return -(-d // 64) * 32 if d < 1024 else 384


def gram(x: Tensor, block: int | None = None) -> Tensor:
    """``XᵀX`` of a ``(tokens, d)`` matrix, computing only the blocks on and above the diagonal.

    The product is symmetric, so each ``block``-wide stripe of rows ``i`` is computed only against
    columns ``i..d`` and mirrored: ``(1 + 1/k) / 2`` of the FLOPs for ``k`` stripes (5/8 for SmolLM2's
    down projection, d = 1536). On 2 CPU cores it took 0.61-0.87 of the time of ``x.T @ x`` for d = 576
    and 1536 at 512 and 4096 tokens (``benchmarks/results/gram.json``, from
    ``python benchmarks/bench_gram.py --threads 2``).
    """
    d = x.shape[1]
    block = _gram_block(d) if block is None else block
    if block <= 0 or d < 2 * block:
        return x.T @ x
    out = x.new_empty(d, d)
    xt = x.T
    for i in range(0, d, block):
        stripe = xt[i : i + block] @ x[:, i:]  # rows i..i+block, columns i..d
        out[i : i + block, i:] = stripe
        out[i + block :, i : i + block] = stripe[:, block:].T
    return out


def accumulate_xtx(acc: Tensor | None, x: Tensor, n_seen: int) -> tuple[Tensor, int]:
    """Add a batch of inputs to the running Hessian ``2/N · XᵀX`` (SparseGPT Sec. 3).

    ``x`` is ``(tokens, d_in)`` or ``(..., d_in)`` (leading dims are flattened). Returns the new
    accumulator (float32, ``d_in × d_in``) and the new token count; the input accumulator is not modified.
    """
    xt = _as_tokens(x)
    return _running_update(acc, gram(xt), xt.shape[0], n_seen, xt.shape[1])


def accumulate_diag(acc: Tensor | None, x: Tensor, n_seen: int) -> tuple[Tensor, int]:
    """The running diagonal of ``2/N · XᵀX`` (``2/N · Σ_t x_tj²``) in O(N·d) instead of O(N·d²).

    All Wanda reads (Sun et al. 2023, eq. 1). Same running-mean convention as :func:`accumulate_xtx`.
    """
    xt = _as_tokens(x)
    total = n_seen + xt.shape[0]
    if total == 0:
        return (acc if acc is not None else xt.new_zeros(xt.shape[1])), 0
    upd = xt.square().sum(0) * (2.0 / total)
    return (upd if acc is None else acc.float() * (n_seen / total) + upd), total


def accumulate_cross(
    acc: Tensor | None, x_dense: Tensor, x_pruned: Tensor, n_seen: int
) -> tuple[Tensor, int]:
    """Add a batch to the running RAKP cross term ``2/N · (X - X̃)ᵀ X̃`` (Li et al. 2023, arXiv:2310.13191).

    ``x_dense`` (dense-model inputs ``X``) and ``x_pruned`` (pruned-model inputs ``X̃``) must be the same
    tokens in the same order. With the same 2/N scale as :func:`accumulate_xtx`,
    ``Xᵀ X̃ = cross + H_pruned``.
    """
    if x_dense.shape != x_pruned.shape:
        raise ValueError(
            f"dense and pruned inputs must be aligned token by token, got shapes {tuple(x_dense.shape)} "
            f"and {tuple(x_pruned.shape)}"
        )
    xd, xp = _as_tokens(x_dense), _as_tokens(x_pruned)
    return _running_update(acc, (xd - xp).T @ xp, xp.shape[0], n_seen, xp.shape[1])


def dampen(H: Tensor, dampening: float) -> Tensor:
    """Return a float32 copy of ``H`` with dead inputs fixed and the diagonal dampened.

    As in the SparseGPT reference code (IST-DASLab/sparsegpt ``fasterprune``): inputs with ``H_jj == 0``
    (never active) get ``H_jj = 1``, then ``dampening · mean(diag H) · I`` is added. ``H`` is not modified.
    """
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be a square matrix, got shape {tuple(H.shape)}")
    Hd = H.float().clone()
    diag = Hd.diagonal()
    diag[diag == 0] = 1.0
    diag.add_(dampening * diag.mean())
    return Hd


def inverse_cholesky_upper(H: Tensor, dampening: float, max_tries: int = 5) -> tuple[Tensor, float]:
    """Upper Cholesky factor ``U`` of ``(dampen(H))⁻¹`` (``UᵀU = H⁻¹``) and the dampening actually used.

    This is the ``Hinv`` of SparseGPT Alg. 1 (Frantar & Alistarh 2023): its rows give the OBS update
    directions of the remaining columns. If a Cholesky factorisation fails (``H`` indefinite or too badly
    conditioned for float32), the dampening is multiplied by 10 (0 becomes 1e-4) and the solve retried,
    with a WARNING naming the old and new value; ``max_tries`` counts all attempts, after which a
    ``ValueError`` is raised.
    """
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    if not bool(torch.isfinite(H).all()):
        raise ValueError(f"H of shape {tuple(H.shape)} contains NaN or Inf; cannot invert it")
    damp = float(dampening)
    for attempt in range(1, max_tries + 1):
        L, info = torch.linalg.cholesky_ex(dampen(H, damp))
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0 and bool(torch.isfinite(U).all()):
                return U, damp
        if attempt == max_tries:
            break
        new = damp * 10.0 if damp > 0 else 1e-4
        logger.warning(
            "Cholesky of the dampened Hessian (%dx%d) failed with dampening %g; retrying with dampening %g",
            H.shape[0],
            H.shape[1],
            damp,
            new,
        )
        damp = new
    raise ValueError(
        f"Cholesky of the Hessian of shape {tuple(H.shape)} failed {max_tries} times, last with dampening "
        f"{damp:g} (started at {dampening:g}); the calibration statistics are likely degenerate "
        f"(check for NaN activations or too few calibration tokens)"
    )
