"""The result of pruning one weight matrix, and the layer-wise error metrics used to compare methods."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class PruneResult:
    """A pruned weight.

    ``weight`` has the input weight's shape, dtype and device and exact zeros where ``mask`` is False;
    ``mask`` is bool, True = keep; ``damp`` is the Hessian dampening actually used (None for methods
    without a Hessian solve); ``delta_norm`` is RAKP's ``||α·Δ||_F / ||W||_F`` (0 otherwise).
    """

    weight: Tensor
    mask: Tensor
    damp: float | None
    delta_norm: float = 0.0


def _trace_quad(A: Tensor, H: Tensor, B: Tensor) -> Tensor:
    """``tr(A H Bᵀ)`` in float64 (the scalar metrics subtract nearly equal terms)."""
    return ((A.double() @ H.double()) * B.double()).sum()


def _relative(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num <= 0 else float("inf")


def output_error(W: Tensor, W_hat: Tensor, H: Tensor) -> float:
    """Relative layer-output error ``tr(D H Dᵀ) / tr(W H Wᵀ)`` with ``D = W - Ŵ``.

    With ``H = 2/N·XᵀX`` this is ``||(W - Ŵ)Xᵀ||² / ||WXᵀ||²``, the objective that SparseGPT/OBS minimise
    (Frantar & Alistarh 2023, Sec. 3, eq. 1). Computed in float64.
    """
    D = W.double() - W_hat.double()
    num = float(_trace_quad(D, H, D))
    den = float(_trace_quad(W, H, W))
    return _relative(max(num, 0.0), den)


def target_error(W: Tensor, W_hat: Tensor, H_dense: Tensor, H_pruned: Tensor, cross: Tensor) -> float:
    """Relative RAKP objective ``||X Wᵀ - X̃ Ŵᵀ||² / ||X Wᵀ||²`` from accumulated statistics.

    ``X`` are the dense model's inputs, ``X̃`` the pruned model's (Li et al. 2023, arXiv:2310.13191).
    Since ``XᵀX̃ = cross + H_pruned`` (all with the 2/N scale),
    ``||.||² = tr(W H_dense Wᵀ) - 2 tr(W (cross + H_pruned) Ŵᵀ) + tr(Ŵ H_pruned Ŵᵀ)``. Computed in float64
    and clamped at 0 (the expansion can go slightly negative through rounding).
    """
    dense = float(_trace_quad(W, H_dense, W))
    mixed = float(_trace_quad(W, cross.double() + H_pruned.double(), W_hat))
    pruned = float(_trace_quad(W_hat, H_pruned, W_hat))
    return _relative(max(dense - 2.0 * mixed + pruned, 0.0), dense)
