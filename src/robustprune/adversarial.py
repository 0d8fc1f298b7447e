"""FreeLB: adversarial training on norm-bounded perturbations of the input word embeddings.

Zhu et al., "FreeLB: Enhanced Adversarial Training for Natural Language Understanding", ICLR 2020,
Algorithm 1, as in the authors' released code (zhuchen03/FreeLB, ``huggingface-transformers`` fork):

1. δ₀ ~ U(−1, 1) on real tokens, scaled so that ‖δ₀‖_F = ``init_mag`` · ‖u‖ / √(L·d) ≤ ``init_mag`` per
   example (L real tokens, d hidden size), 0 on padding;
2. for t = 1..K: forward on ``word_embeddings(x) + δ_{t−1}``, loss / K, backward — the parameter
   gradients of the K steps *accumulate*, so the update uses their mean (the "free" part);
   then δ_t = Π_{‖δ‖_F ≤ ε}(δ_{t−1} + a · g_δ / ‖g_δ‖_F) per example (the ascent step, L2 norm);
3. one optimiser step on the accumulated gradient (the caller's).

``steps`` = K, ``step_size`` = a (adv-lr), ``max_norm`` = ε (adv-max-norm; 0 = unbounded, as the reference's
``--adv-max-norm 0``, which its SST-2 run uses), ``init_mag`` (adv-init-mag).
Deviation: δ₀ is also projected onto the ε-ball (the reference projects only after each ascent step; with
``init_mag ≤ max_norm`` the projection never acts).

Dropout (``share_dropout``): the reference draws each dropout mask once per batch and reuses it in all K
ascent steps (``run_glue_freelb.py``: ``dp_masks = None`` before the loop, ``outputs, dp_masks =
model(**inputs)`` with ``inputs['dp_masks'] = dp_masks`` inside it; the masks are made and replayed in its
patched ``modeling_albert.py``), so the K losses differ only by δ and the ascent follows one function.
``share_dropout=True`` does the same for any Hugging Face model without patching its code
(:class:`SharedDropout`): every ``nn.Dropout`` records its mask in the first step and replays it in the
next ones, and attention layers that drop inside a fused kernel (BERT's SDPA attention) run their eager
path during the K steps, whose attention dropout is an ``nn.Dropout``. ``False`` (the default, this
project's earlier behaviour) draws fresh masks at every step.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class FreeLBSettings:
    """K ascent steps of size ``step_size`` inside an L2 ball of radius ``max_norm`` per example
    (``max_norm == 0``: no ball, as the reference's ``adv_max_norm 0``); ``share_dropout``: one dropout
    mask per batch for all K steps (the reference's ``dp_masks``)."""

    steps: int = 2
    step_size: float = 0.1
    max_norm: float = 0.6
    init_mag: float = 0.2
    share_dropout: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"FreeLB steps must be >= 0, got {self.steps}")
        if self.step_size <= 0 or self.max_norm < 0 or self.init_mag < 0:
            raise ValueError(
                f"FreeLB needs step_size > 0, max_norm >= 0 (0 = unbounded), init_mag >= 0; got "
                f"{self.step_size}, {self.max_norm}, {self.init_mag}"
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
    """Scale each example's δ back onto the ball ‖δ‖_F ≤ ``max_norm`` (no change inside it; ``max_norm``
    0: unbounded, δ unchanged)."""
    if max_norm == 0:
        return delta
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


def _eager_attention_forward(module: nn.Module):  # noqa: ANN202 - bound method or None
    """The eager ``forward`` of an attention layer whose class drops attention inside a fused kernel.

    Hugging Face's ``*SdpaSelfAttention`` classes pass ``dropout_p`` to ``scaled_dot_product_attention``
    (no ``nn.Dropout`` to share); their parent class (e.g. ``BertSelfAttention``) computes the same attention
    eagerly and drops the attention probabilities through ``self.dropout``. None for any other module.
    """
    cls = type(module)
    if "Sdpa" not in cls.__name__ or not isinstance(getattr(module, "dropout", None), nn.Dropout):
        return None
    for base in cls.__mro__[1:]:
        if "forward" in base.__dict__ and "Sdpa" not in base.__name__:
            return types.MethodType(base.__dict__["forward"], module)
    return None


class SharedDropout:
    """Inside the context, each ``nn.Dropout`` of ``model`` draws its mask in the first forward and replays
    it in every later forward until the context ends (the reference FreeLB's ``dp_masks``); call
    :meth:`next_forward` before each forward. Fused-kernel attention runs its eager path (see
    :func:`_eager_attention_forward`) so that its attention dropout is shared too.

    ``masks`` maps each dropout module to the masks it drew, in call order within one forward (a module
    called twice per forward keeps two). Masks are ``bernoulli(1 - p) / (1 - p)`` as ``nn.Dropout``'s.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.masks: dict[nn.Module, list[torch.Tensor]] = {}
        self._calls: dict[nn.Module, int] = {}
        self._patched: list[tuple[nn.Module, object]] = []

    def next_forward(self) -> None:
        """Start a forward: each module's next call replays its first mask again."""
        self._calls.clear()

    def _dropout(self, module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        if not module.training or module.p == 0:
            return x
        i = self._calls.get(module, 0)
        self._calls[module] = i + 1
        drawn = self.masks.setdefault(module, [])
        if i == len(drawn):
            keep = 1.0 - module.p
            mask = torch.empty_like(x).bernoulli_(keep)
            drawn.append(mask / keep if keep > 0 else mask)
        mask = drawn[i]
        if mask.shape != x.shape:
            raise ValueError(f"shared dropout: input shape {tuple(x.shape)} changed from {tuple(mask.shape)}")
        return x * mask

    def __enter__(self) -> SharedDropout:
        for module in self.model.modules():
            if isinstance(module, nn.Dropout):
                forward = types.MethodType(lambda m, x, _s=self: _s._dropout(m, x), module)
            else:
                forward = _eager_attention_forward(module)
                if forward is None:
                    continue
            self._patched.append((module, module.__dict__.get("forward")))
            module.forward = forward
        return self

    def __exit__(self, *exc: object) -> None:
        for module, previous in reversed(self._patched):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        self._patched.clear()


@contextlib.contextmanager
def _dropout_sharing(model: nn.Module, share: bool) -> Iterator[SharedDropout | None]:
    if not share or not model.training:
        yield None
        return
    with SharedDropout(model) as shared:
        yield shared


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
    with _dropout_sharing(model, settings.share_dropout) as shared:
        for step in range(settings.steps):
            if shared is not None:
                shared.next_forward()
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
