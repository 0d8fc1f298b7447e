"""Unstructured masks on every encoder Linear, through ``torch.nn.utils.parametrize``.

Each prunable Linear (query, key, value, attention output, intermediate, output of every block; never the
embeddings, pooler or classifier) gets a :class:`WeightMask` parametrization: ``weight = W ⊙ M``. The
mask is recomputed once per training step (:func:`update_masks`) from

* ``magnitude``: the ``int(keep · numel)`` largest ``|W|`` of the matrix (gradual magnitude pruning);
* ``movement`` (CAP-m; Sanh et al. 2020): the ``int(keep · numel)`` largest learned scores ``S``, with the
  straight-through estimator ``∂L/∂S = ∂L/∂W' ⊙ W`` (the reference's ``TopKBinarizer``; scores start at 0);
* ``soft`` (CAP-soft): ``σ(S) > τ`` with the same straight-through gradient and an L1 penalty on
  ``σ(S)`` (:func:`l1_penalty`); the reference keeps at least 0.5% of each matrix. Its sparsity is what
  the penalty reaches, not an exact count.

Counts are exact per matrix (ties broken by position). :func:`bake` removes the parametrizations and leaves
a plain classifier whose weights are ``W ⊙ M``: ``from_pretrained`` loads it like any other.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from robustprune.modeling import prunable_linears

CRITERIA = ("magnitude", "movement", "soft")


def topk_mask(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of exactly ``keep`` largest entries of ``x`` (ties: lowest flat index first)."""
    n = x.numel()
    flat = x.detach().flatten()
    if keep <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    if keep >= n:
        return torch.ones_like(x, dtype=torch.bool)
    v = flat.kthvalue(n - keep + 1).values  # the keep-th largest value
    mask = flat > v
    need = keep - int(mask.sum())
    if need > 0:
        ties = (flat == v).nonzero().squeeze(1)[:need]
        mask[ties] = True
    return mask.view_as(x)


def kept_count(numel: int, sparsity: float) -> int:
    """Weights kept in a matrix of ``numel`` at ``sparsity``: ``int((1 − s) · numel)`` (the reference's j)."""
    return int((1.0 - sparsity) * numel)


class WeightMask(nn.Module):
    """Parametrization ``W -> W ⊙ M``; ``scores`` (movement / soft) get the straight-through gradient."""

    def __init__(self, weight: torch.Tensor, criterion: str) -> None:
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(f"criterion {criterion!r} is not one of {list(CRITERIA)}")
        self.criterion = criterion
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))
        if criterion != "magnitude":
            self.scores = nn.Parameter(torch.zeros_like(weight))  # reference: mask_init constant, scale 0

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(weight.dtype)
        if self.criterion != "magnitude":
            m = m + (self.scores - self.scores.detach())  # value exactly M, gradient straight through to S
        return weight * m

    @torch.no_grad()
    def update(self, weight: torch.Tensor, sparsity: float, threshold: float | None = None) -> None:
        """Recompute M: top-k of |W| or of S at ``sparsity``, or σ(S) > ``threshold`` (soft)."""
        if self.criterion == "soft":
            if threshold is None:
                raise ValueError("soft masks need a threshold")
            mask = torch.sigmoid(self.scores) > threshold
            floor = int(0.005 * mask.numel()) + 1  # the reference's ThresholdBinarizer keeps >= 0.5%
            if int(mask.sum()) < floor:
                mask = topk_mask(self.scores, floor)
            self.mask.copy_(mask)
            return
        source = weight.abs() if self.criterion == "magnitude" else self.scores
        self.mask.copy_(topk_mask(source, kept_count(weight.numel(), sparsity)))


def attach(model: nn.Module, criterion: str) -> dict[str, WeightMask]:
    """Register a :class:`WeightMask` on every prunable encoder Linear; returns them by Linear name."""
    out = {}
    for name, lin in prunable_linears(model).items():
        if parametrize.is_parametrized(lin, "weight"):
            raise ValueError(f"{name} already has a weight parametrization")
        parametrize.register_parametrization(lin, "weight", WeightMask(lin.weight.detach(), criterion))
        out[name] = lin.parametrizations.weight[0]
    return out


def masked_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in prunable_linears(model).items() if parametrize.is_parametrized(m, "weight")}


def parametrizations(model: nn.Module) -> dict[str, WeightMask]:
    return {n: m.parametrizations.weight[0] for n, m in masked_linears(model).items()}


@torch.no_grad()
def update_masks(model: nn.Module, sparsity: float, threshold: float | None = None) -> None:
    """Recompute every mask for this step (magnitude reads the current unmasked weights)."""
    for lin in masked_linears(model).values():
        p = lin.parametrizations.weight
        p[0].update(p.original, sparsity, threshold)


def score_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p.scores for p in parametrizations(model).values() if hasattr(p, "scores")]


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Mean over matrices of ‖σ(S)‖₁ / numel (the reference's ``regularization(mode="l1")``)."""
    scores = score_parameters(model)
    if not scores:
        raise ValueError("l1_penalty needs movement / soft scores")
    return torch.stack([torch.sigmoid(s).sum() / s.numel() for s in scores]).mean()


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.mask.clone() for n, p in parametrizations(model).items()}


@torch.no_grad()
def bake(model: nn.Module) -> dict[str, torch.Tensor]:
    """Remove every mask parametrization, leaving ``weight = W ⊙ M``; returns the masks by Linear name."""
    masks = {}
    for name, lin in masked_linears(model).items():
        masks[name] = lin.parametrizations.weight[0].mask.clone()
        original = lin.parametrizations.weight.original
        parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
        lin.weight.copy_(original * masks[name].to(original.dtype))
    return masks
