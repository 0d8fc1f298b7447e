"""RAKP's head refit: rectify the pooler and the classifier for the pruned encoder's outputs.

RAKP (Li et al. 2023, Sec. 4.2) refits every dense weight of the pruned model to reproduce the dense model's
output from the pruned model's inputs, ``W̄ = (X̂ᵀX̂)⁻¹X̂ᵀY`` with a small damping, and refits "the pooler
and the classifier" the same way, although they are never pruned. Each head Linear, in forward order, gets
the rectification of :func:`robustprune.pruning.rakp_correction`,

    W* = W + α·Δ,    Δ = W · cross · (H̃ + λI)⁻¹,    λ = ridge · mean(diag H̃),

from its inputs on the two streams: ``X`` = what it reads in the dense model (the dense last block's
output through the dense head), ``X̃`` = what it reads in the pruned model (the pruned last block's output
through the head as rectified so far). α = 1 with a small ridge is the paper's full refit; the bias is
kept (it cancels in ``‖X Wᵀ − X̃ W*ᵀ‖²``). Identical streams give ``Δ = 0`` exactly. A classifier reads
one row per text (the first token), so the head sees as many rows as there are calibration texts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from robustprune.modeling import head_linears, output_head
from robustprune.pruning.hessian import accumulate_cross, accumulate_xtx
from robustprune.pruning.rakp import rakp_correction
from robustprune.pruning.rakp_alpha import Head, kl_sum
from robustprune.pruning.streams import Stop


@dataclass
class HeadReport:
    """What the head refit did, measured on the calibration texts it was fitted on."""

    alpha: float
    rows: int  # calibration rows the head saw (one per text for a classifier)
    error_before: float  # ‖Z − Z̃‖² / ‖Z‖² of the logits (dense Z, pruned Z̃) before the refit
    error_after: float
    kl_before: float  # mean KL(dense ‖ pruned) of the class distribution
    kl_after: float
    delta_norm: dict[str, float] = field(default_factory=dict)  # ‖α·Δ‖_F / ‖W‖_F per head Linear


def _linear_inputs(
    head: Head,
    linears: dict[str, nn.Linear],
    hidden: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    upto: str = "",
) -> dict[str, list[torch.Tensor]]:
    """Every head Linear's input rows per batch; with ``upto``, each pass stops once that Linear has read its
    input (what comes after is not needed)."""
    got: dict[str, list[torch.Tensor]] = {name: [] for name in linears}

    def make_hook(name: str):  # noqa: ANN202
        def hook(_mod: nn.Module, inp: tuple) -> None:
            got[name].append(inp[0].reshape(-1, inp[0].shape[-1]).float())
            if name == upto:
                raise Stop

        return hook

    handles = [lin.register_forward_pre_hook(make_hook(name)) for name, lin in linears.items()]
    try:
        for h, m in zip(hidden, masks, strict=True):
            with contextlib.suppress(Stop):
                head(h, m)
    finally:
        for handle in handles:
            handle.remove()
    return got


def _logit_errors(dense: Sequence[torch.Tensor], got: Sequence[torch.Tensor]) -> tuple[float, float, int]:
    num = sum(float((d.float() - g.float()).square().sum()) for d, g in zip(dense, got, strict=True))
    den = sum(float(d.float().square().sum()) for d in dense)
    rows = sum(d.shape[0] for d in dense)
    kl = sum(kl_sum(d, g) for d, g in zip(dense, got, strict=True))
    return num / max(den, 1e-30), kl / max(rows, 1), rows


@torch.inference_mode()
def refit_head(
    model: nn.Module,
    pruned_hidden: Sequence[torch.Tensor],
    dense_hidden: Sequence[torch.Tensor],
    token_mask: Sequence[torch.Tensor],
    *,
    alpha: float,
    ridge: float,
) -> HeadReport:
    """Rectify ``model``'s head Linears in place (module doc) and report the logits' error before and after.

    ``pruned_hidden`` / ``dense_hidden``: the last block's output per calibration batch on the pruned and
    the dense stream (token-aligned); ``token_mask``: the batches' real tokens. Raises
    UnsupportedModelError for a model without a sequence-classification head.
    """
    linears = head_linears(model)
    head = output_head(model)
    dense_in = _linear_inputs(head, linears, dense_hidden, token_mask)
    dense_logits = [head(h, m) for h, m in zip(dense_hidden, token_mask, strict=True)]
    before = [head(h, m) for h, m in zip(pruned_hidden, token_mask, strict=True)]
    err0, kl0, rows = _logit_errors(dense_logits, before)
    report = HeadReport(
        alpha=alpha, rows=rows, error_before=err0, error_after=err0, kl_before=kl0, kl_after=kl0
    )
    for name, lin in linears.items():
        pruned_in = _linear_inputs(head, linears, pruned_hidden, token_mask, upto=name)[name]
        H = cross = None
        n = 0
        for xd, xp in zip(dense_in[name], pruned_in, strict=True):
            H, _ = accumulate_xtx(H, xp, n)
            cross, n = accumulate_cross(cross, xd, xp, n)
        W = lin.weight.data
        step = (
            alpha * rakp_correction(W, H, cross, ridge) if alpha else torch.zeros_like(W, dtype=torch.float32)
        )
        w_norm = float(W.float().norm())
        report.delta_norm[name] = float(step.norm()) / w_norm if w_norm > 0 else 0.0
        if bool(step.any()):
            W.copy_((W.float() + step).to(W.dtype))
    after = [head(h, m) for h, m in zip(pruned_hidden, token_mask, strict=True)]
    report.error_after, report.kl_after, _ = _logit_errors(dense_logits, after)
    return report
