"""SDS's layer mathematics: one Linear's reconstruction problem and the solvers that minimise it.

Li et al., "Enhancing One-shot Pruned Pre-trained Language Models through Sparse-Dense-Sparse Mechanism"
(arXiv:2408.10473, COLING 2025), steps 2 and 3 for a single Linear; the model driver is
:mod:`robustprune.sds`.

The layer problem. A Linear of the model being reconstructed sees inputs ``X̃`` (``tokens × d_in``, from
the model reconstructed so far) and must reproduce the dense model's output ``Y = X W_dᵀ`` on the dense
stream ``X`` (token-aligned, RAKP's target). With ``H = 2/N · X̃ᵀX̃`` and ``B = 2/N · YᵀX̃ = W_d · 2/N · XᵀX̃``
the loss is a quadratic that needs only these statistics::

    f(W) = 1/N ||X̃ Wᵀ − Y||²_F = ½ tr(W H Wᵀ) − tr(W Bᵀ) + 1/N ||Y||²,    ∇f = W H − B,

so every optimisation step is exact and full-batch and costs ``d_out · d_in²`` flops, independent of
the number of calibration tokens (no token mini-batches). The penalty acts on the previously pruned
positions ``P`` only (the kept ones are free)::

    l1:     R(W) = λ Σ_{(i,j) ∈ P} c_i √H_jj |W_ij|
    group:  R(W) = λ Σ_{rows i, column groups g} c_i √(Σ_{j ∈ g∩P_i} H_jj) ‖W_{i, g∩P_i}‖₂

with ``c_i`` the row's mean kept Wanda score ``mean_{j ∉ P} |W_ij| √H_jj``. This makes ``λ``
dimensionless and one value meaningful across layers whose inputs differ in scale by orders of
magnitude: in the diagonal approximation of ``H`` a re-activated weight stays exactly zero while its
Wanda score ``|W_ij| √H_jj`` is below ``λ`` times its row's mean kept score. (``group`` with a single
pruned entry is the ``l1`` term; the groups are ``group_size`` consecutive columns of a row, the N:M
groups for ``group_size = M``.)

Solvers (``optimizer``): proximal gradient, ISTA or FISTA (Beck & Teboulle 2009), with step
``lr / λ_max(H)``; the prox of the weighted L1 is a soft-threshold, of the group penalty a block
soft-threshold, so **only these two make exact zeros**. ISTA converges for ``lr < 2``, FISTA for
``lr <= 1`` (beyond, both diverge: :class:`SDSOptions` refuses such values). Adam (Kingma & Ba 2015)
follows the gradient plus the L1 sub-gradient with a per-row step ``lr · RMS(row weights)`` (``lr <= 1``):
its weights hover around zero and are never exactly zero, so with Adam the re-prune alone decides
sparsity.

Initialisation (``init``): "pruned" (default) is re-activation as we read the paper, and as in DSD
(Han et al. 2017, "Dense-Sparse-Dense training": the pruned weights "recover" from zero): the
re-activated weights start at zero and the kept ones at their pruned (for SparseGPT, OBS-compensated)
values, so the dense model grows out of the sparse solution; "dense" starts from the original dense
weights (the first prune then only provides the penalty's support). The number of steps is a
regulariser too: from the sparse start, gradient steps of ``1/λ_max(H)`` fit the high-variance
directions of ``X̃`` first, and the full least-squares fit is what RAKP's α < 1 avoids
(:mod:`robustprune.pruning.rakp`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from robustprune.config import SDS_LR_LIMITS, sds_lr_problem

OPTIMIZERS = tuple(SDS_LR_LIMITS)  # ("ista", "fista", "adam")
REGULARIZERS = ("l1", "group")
INITS = ("pruned", "dense")


@dataclass(frozen=True)
class SDSOptions:
    """Hyper-parameters of the re-dense reconstruction (step 2) and of the final adjustment (step 3)."""

    # defaults = params.yaml's sds section (params-lm.yaml uses l1 0.3, 60 steps: what
    # benchmarks/results/sds_smollm2.json ran with)
    l1: float = 0.1  # λ: penalty weight on the previously pruned positions (dimensionless, see module doc)
    regularizer: str = "l1"  # "l1" | "group" (groups of ``group_size`` consecutive columns of a row)
    group_size: int = 4
    steps: int = 20
    lr: float = 1.0  # ista/fista: step = lr / λ_max(H); adam: step = lr · RMS(row weights); see SDS_LR_LIMITS
    optimizer: str = "fista"
    init: str = "pruned"  # "pruned" (paper: re-activated weights start at 0) | "dense"
    final_adjust_steps: int = 0  # mask-fixed reconstruction after the re-prune (0 = skip)
    adjust_lr: float = 1.0
    seed: int = 0  # power-iteration start vector (the only randomness)
    modules: str | None = None  # regex on Linear names inside a block (None = every prunable Linear)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.l1 < 0 or self.steps < 0 or self.final_adjust_steps < 0 or self.group_size < 1:
            raise ValueError(
                f"need l1 >= 0, steps >= 0, final_adjust_steps >= 0, group_size >= 1; got {self.l1}, "
                f"{self.steps}, {self.final_adjust_steps}, {self.group_size}"
            )
        for name in ("lr", "adjust_lr"):
            problem = sds_lr_problem(self.optimizer, getattr(self, name))
            if problem:
                raise ValueError(f"{name}: {problem}")


@dataclass(frozen=True)
class LayerStats:
    """Sufficient statistics of ``f(W) = 1/N ||X̃Wᵀ − Y||²``: ``H = 2/N X̃ᵀX̃``, ``B = 2/N YᵀX̃``, ``y_sq = 1/N ||Y||²``."""

    H: Tensor  # (d_in, d_in)
    B: Tensor  # (d_out, d_in)
    y_sq: float


@dataclass
class LayerFit:
    name: str
    error_before: float  # f(W₀) / f(0): relative error against the dense output, at the start
    error_after: float  # the same after the fit
    reactivated: float  # ‖W_P‖_F / ‖W‖_F: share of the weight norm on previously pruned positions
    zero_share: float  # share of previously pruned positions that are exactly zero after the fit
    steps: int
    seconds: float


def quadratic_stats(X_in: Tensor, Y_target: Tensor) -> LayerStats:
    """``LayerStats`` from token matrices: inputs ``X_in`` (``tokens × d_in``), targets ``Y_target`` (``tokens × d_out``)."""
    X, Y = X_in.reshape(-1, X_in.shape[-1]).float(), Y_target.reshape(-1, Y_target.shape[-1]).float()
    if X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X_in and Y_target need the same (non-zero) token count: {X.shape}, {Y.shape}")
    n = X.shape[0]
    return LayerStats(H=2.0 / n * X.T @ X, B=2.0 / n * Y.T @ X, y_sq=float(Y.square().sum()) / n)


def objective(W: Tensor, stats: LayerStats) -> float:
    """``f(W) = ½ tr(W H Wᵀ) − tr(W Bᵀ) + y_sq`` in float64 (≥ 0 up to rounding)."""
    Wd = W.double()
    quad = 0.5 * float(((Wd @ stats.H.double()) * Wd).sum())
    return max(quad - float((Wd * stats.B.double()).sum()) + stats.y_sq, 0.0)


def relative_error(W: Tensor, stats: LayerStats) -> float:
    """``f(W) / f(0) = ‖X̃Wᵀ − Y‖² / ‖Y‖²`` (0 when the target is zero)."""
    return objective(W, stats) / stats.y_sq if stats.y_sq > 0 else 0.0


def lipschitz(H: Tensor, iters: int = 64, seed: int = 0) -> float:
    """``λ_max(H)`` of a PSD matrix by power iteration (``∇f`` is ``L``-Lipschitz with ``L = λ_max``).

    The Rayleigh quotient approaches ``λ_max`` from below; 5 % is added so that a step ``1/L`` stays
    stable (ISTA/FISTA converge for any step ≤ 1/λ_max).
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(H.shape[0], generator=g, dtype=torch.float32).to(H.device)
    Hf = H.float()
    lam = 0.0
    for _ in range(iters):
        w = Hf @ v
        norm = float(w.norm())
        if norm == 0:
            return 1.0
        lam = float(v @ w) / float(v @ v)
        v = w / norm
    return max(1.05 * lam, 1e-30)


def penalty_weights(weight: Tensor, mask: Tensor, H: Tensor, l1: float) -> Tensor:
    """Per-entry L1 weights ``λ c_i √H_jj`` on the pruned positions (``mask`` False), 0 on kept ones.

    ``c_i`` is row i's mean kept Wanda score ``|W_ij| √H_jj`` (over ``mask`` True), so that ``λ`` reads
    as a fraction of that score (module doc). A row with no kept weight uses the layer's mean.
    """
    s = H.diagonal().float().clamp_min(0).sqrt().unsqueeze(0)  # (1, d_in): ‖x_j‖ up to √(2/N)
    score = (weight.float().abs() * s).masked_fill(~mask, 0)
    kept = mask.sum(1, keepdim=True)
    c = score.sum(1, keepdim=True) / kept.clamp_min(1)
    fallback = score.sum() / mask.sum().clamp_min(1)
    c = torch.where(kept > 0, c, fallback)
    return (l1 * c * s).masked_fill(mask, 0)


def _soft_threshold(W: Tensor, thresh: Tensor) -> Tensor:
    """Prox of ``Σ t_ij |W_ij|``: ``sign(W) max(|W| − t, 0)``."""
    return W.sign() * (W.abs() - thresh).clamp_min(0)


def _group_soft_threshold(W: Tensor, thresh: Tensor, pruned: Tensor, size: int) -> Tensor:
    """Prox of ``Σ_g t_g ‖W_{g∩P}‖₂`` over groups of ``size`` consecutive columns (block soft-threshold).

    ``thresh`` holds the per-entry weights ``λ c_i √H_jj``; the group's threshold is the root-sum-square
    of its pruned entries' weights. Kept entries are untouched.
    """
    rows, cols = W.shape
    pad = (-cols) % size
    Wp = torch.nn.functional.pad(W, (0, pad)).view(rows, -1, size)
    Pp = torch.nn.functional.pad(pruned, (0, pad)).view(rows, -1, size)
    Tp = torch.nn.functional.pad(thresh, (0, pad)).view(rows, -1, size)
    tg = Tp.square().sum(-1, keepdim=True).sqrt()
    norm = (Wp * Pp).square().sum(-1, keepdim=True).sqrt()
    shrink = (1 - tg / norm.clamp_min(1e-30)).clamp_min(0)
    out = torch.where(Pp, Wp * shrink, Wp)
    return out.view(rows, -1)[:, :cols]


def fit_layer(
    W0: Tensor,
    stats: LayerStats,
    *,
    steps: int,
    lr: float,
    optimizer: str = "fista",
    free: Tensor | None = None,
    penalty: Tensor | None = None,
    group_size: int | None = None,
    seed: int = 0,
) -> Tensor:
    """Minimise ``f(W) + Σ penalty_ij |W_ij|`` (or the group form) from ``W0`` in ``steps`` steps.

    ``free`` (bool, like ``W0``; None = all) fixes the other entries at 0 (the final adjustment's fixed
    mask: projected gradient). ``penalty`` holds non-negative per-entry L1 weights (None = no penalty);
    with ``group_size`` it is the group penalty of the module doc on the entries where ``penalty > 0``.
    Proximal gradient: ISTA / FISTA (Beck & Teboulle 2009, eq. 4.1-4.3) with step ``lr / λ_max(H)``;
    Adam (Kingma & Ba 2015, Alg. 1) on the gradient plus the L1 sub-gradient, step ``lr · RMS(W0 row)``.
    Only the proximal solvers set penalised entries exactly to zero.
    Returns float32 on ``W0``'s device; ``W0`` is not modified.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    H, B = stats.H.float().to(W0.device), stats.B.float().to(W0.device)
    W = W0.detach().float().clone()
    if free is not None:
        W.masked_fill_(~free, 0)
    if steps == 0:
        return W
    pen = None if penalty is None or not bool((penalty > 0).any()) else penalty.float().to(W.device)

    def prox(V: Tensor, step: float) -> Tensor:
        if pen is not None:
            if group_size:
                V = _group_soft_threshold(V, step * pen, pen > 0, group_size)
            else:
                V = _soft_threshold(V, step * pen)
        return V.masked_fill_(~free, 0) if free is not None else V

    if optimizer == "adam":
        return _adam(W, H, B, steps, lr, pen, free)
    eta = lr / lipschitz(H, seed=seed)
    Z, t = W, 1.0
    for _ in range(steps):
        W_next = prox(Z - eta * (Z @ H - B), eta)
        if optimizer == "fista":
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            Z = W_next + ((t - 1) / t_next) * (W_next - W)
            t = t_next
        else:
            Z = W_next
        W = W_next
    return W


def _adam(
    W: Tensor, H: Tensor, B: Tensor, steps: int, lr: float, pen: Tensor | None, free: Tensor | None
) -> Tensor:
    """Adam on ``∇f + pen ⊙ sign(W)`` with a per-row step ``lr · RMS(W row)`` (β = 0.9, 0.999)."""
    step = lr * W.square().mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    m, v = torch.zeros_like(W), torch.zeros_like(W)
    b1, b2, eps = 0.9, 0.999, 1e-12
    for k in range(1, steps + 1):
        g = W @ H - B
        if pen is not None:
            g = g + pen * W.sign()
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        upd = (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + eps)
        W = W - step * upd
        if free is not None:
            W.masked_fill_(~free, 0)
    return W


def _fit_report(
    name: str, W0: Tensor, W: Tensor, mask: Tensor, stats: LayerStats, steps: int, t0: float
) -> LayerFit:
    pruned = ~mask
    total = float(W.norm())
    return LayerFit(
        name=name,
        error_before=relative_error(W0, stats),
        error_after=relative_error(W, stats),
        reactivated=float(W[pruned].norm()) / total if total > 0 else 0.0,
        zero_share=float((W[pruned] == 0).float().mean()) if bool(pruned.any()) else 1.0,
        steps=steps,
        seconds=time.perf_counter() - t0,
    )


def reactivate_layer(
    weight: Tensor, mask: Tensor, stats: LayerStats, opts: SDSOptions, *, name: str = ""
) -> tuple[Tensor, LayerFit]:
    """Step 2 for one Linear: dense reconstruction from ``weight`` under the penalty on ``~mask``.

    ``weight`` is the starting point (the pruned weight for ``init="pruned"``, the dense one for
    ``init="dense"``), ``mask`` the first prune's keep-mask (True = kept), ``stats`` the layer's
    quadratic. Returns the re-activated weight (float32) and a report.
    """
    t0 = time.perf_counter()
    mask = mask.to(weight.device).bool()
    pen = penalty_weights(weight, mask, stats.H.to(weight.device), opts.l1) if opts.l1 > 0 else None
    group_size = opts.group_size if opts.regularizer == "group" else None
    return _fit_timed(
        weight, mask, stats, opts, name, t0, steps=opts.steps, lr=opts.lr, penalty=pen, group_size=group_size
    )


def adjust_layer(
    weight: Tensor, mask: Tensor, stats: LayerStats, opts: SDSOptions, *, name: str = ""
) -> tuple[Tensor, LayerFit]:
    """Step 3's optional weight adjustment for one Linear: refit the kept weights (``mask`` True) only."""
    t0 = time.perf_counter()
    mask = mask.to(weight.device).bool()
    return _fit_timed(
        weight, mask, stats, opts, name, t0, steps=opts.final_adjust_steps, lr=opts.adjust_lr, free=mask
    )


def _fit_timed(
    weight: Tensor,
    mask: Tensor,
    stats: LayerStats,
    opts: SDSOptions,
    name: str,
    t0: float,
    *,
    steps: int,
    lr: float,
    **fit: Tensor | int | None,
) -> tuple[Tensor, LayerFit]:
    """The body :func:`reactivate_layer` and :func:`adjust_layer` share: :func:`fit_layer` with the options'
    optimizer and seed plus that step's ``steps``, ``lr`` and ``fit`` arguments (penalty or free mask), then the
    report of the fit timed from ``t0``."""
    W = fit_layer(weight, stats, steps=steps, lr=lr, optimizer=opts.optimizer, seed=opts.seed, **fit)
    return W, _fit_report(name, weight.float(), W, mask, stats, steps, t0)
