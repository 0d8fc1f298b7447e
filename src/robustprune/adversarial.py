"""FreeLB: adversarial training on norm-bounded perturbations of the input word embeddings.

Zhu et al., "FreeLB: Enhanced Adversarial Training for Natural Language Understanding", ICLR 2020,
Algorithm 1, as in the authors' released code (zhuchen03/FreeLB, ``huggingface-transformers`` fork):

1. δ₀ ~ U(−1, 1) on real tokens, scaled so that ‖δ₀‖_F = ``init_mag`` · ‖u‖ / √(L·d) ≤ ``init_mag`` per
   example (L real tokens, d hidden size), 0 on padding;
2. for t = 1..K: forward on ``word_embeddings(x) + δ_{t−1}``, loss / K, backward — the parameter
   gradients of the K steps *accumulate*, so the update uses their mean (the "free" part);
   then δ_t = Π_{‖δ‖_F ≤ ε}(δ_{t−1} + a · g_δ / ‖g_δ‖_F) per example (the ascent step, L2 norm);
3. one optimiser step on the accumulated gradient (the caller's).

``steps`` = K, ``step_size`` = a (adv-lr), ``max_norm`` = ε (adv-max-norm), ``init_mag`` (adv-init-mag).
Deviation: δ₀ is also projected onto the ε-ball (the reference projects only after each ascent step; with
``init_mag ≤ max_norm`` the projection never acts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class FreeLBSettings:
    """K ascent steps of size ``step_size`` inside an L2 ball of radius ``max_norm`` per example."""

    steps: int = 2
    step_size: float = 0.1
    max_norm: float = 0.6
    init_mag: float = 0.2

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"FreeLB steps must be >= 0, got {self.steps}")
        if self.step_size <= 0 or self.max_norm <= 0 or self.init_mag < 0:
            raise ValueError(
                f"FreeLB needs step_size > 0, max_norm > 0, init_mag >= 0; got {self.step_size}, "
                f"{self.max_norm}, {self.init_mag}"
            )


@dataclass
class FreeLBStep:
    """One batch's outcome: the mean loss over the K steps and, when recorded, every δ used."""

    loss: float
    deltas: list[torch.Tensor] = field(default_factory=list)


def _per_example_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example's (L, d) slice, shaped (B, 1, 1) for broadcasting."""
    return x.flatten(1).norm(dim=1).view(-1, 1, 1)


def project(delta: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each example's δ back onto the ball ‖δ‖_F ≤ ``max_norm`` (no change inside it)."""
    norm = _per_example_norm(delta)
    return delta * torch.where(norm > max_norm, max_norm / norm.clamp_min(1e-12), torch.ones_like(norm))


def init_delta(
    embeds: torch.Tensor, mask: torch.Tensor, settings: FreeLBSettings, generator: torch.Generator | None
) -> torch.Tensor:
    """δ₀: uniform noise on real tokens with per-example magnitude ≤ ``init_mag`` (Algorithm 1, line 4)."""
    m = mask.to(embeds.dtype).unsqueeze(-1)
    if settings.init_mag == 0:
        return torch.zeros_like(embeds)
    u = torch.rand(embeds.shape, generator=generator, device="cpu").to(embeds.device, embeds.dtype)
    u = (2 * u - 1) * m
    dims = m.sum(dim=(1, 2)) * embeds.shape[-1]
    delta = u * (settings.init_mag / dims.clamp_min(1).sqrt()).view(-1, 1, 1)
    return project(delta, settings.max_norm)


def freelb_backward(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    settings: FreeLBSettings,
    *,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> FreeLBStep:
    """Accumulate FreeLB's parameter gradients for one batch into ``.grad`` (no optimiser step).

    ``batch`` holds ``input_ids`` and ``attention_mask`` (and optionally ``token_type_ids``); the model is a
    Hugging Face classifier whose ``get_input_embeddings()`` gives the word embeddings. With ``steps == 0``
    nothing is computed (no gradient; the caller trains without adversary instead).
    """
    if settings.steps == 0:
        return FreeLBStep(loss=float("nan"))
    inputs = {k: v for k, v in batch.items() if k != "input_ids"}
    mask = batch["attention_mask"]
    word_embeddings = model.get_input_embeddings()
    delta = None
    out = FreeLBStep(loss=0.0)
    for step in range(settings.steps):
        embeds = word_embeddings(batch["input_ids"])  # recomputed each step: the embeddings learn too
        if delta is None:
            delta = init_delta(embeds.detach(), mask, settings, generator)
        delta.requires_grad_()
        if record:
            out.deltas.append(delta.detach().clone())
        loss = model(inputs_embeds=embeds + delta, labels=labels, **inputs).loss / settings.steps
        loss.backward()
        out.loss += float(loss.detach())
        if step == settings.steps - 1:
            break
        grad = delta.grad.detach()
        # ascent step on δ, normalised per example, then projection (Algorithm 1, lines 9-10)
        delta = delta.detach() + settings.step_size * grad / _per_example_norm(grad).clamp_min(1e-8)
        delta = project(delta * mask.to(delta.dtype).unsqueeze(-1), settings.max_norm)
    return out
