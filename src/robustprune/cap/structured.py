"""CAP-f: structured pruning of attention heads and FFN neurons, with physical removal.

Reference: ``StructuredPruning/prune/prune_utils.py`` (after Michel et al. 2019 and DynaBERT):

* gates: a multiplier per attention head (on the head's context vectors, which equals HF's ``head_mask``
  on its attention probabilities) and per FFN neuron (on the intermediate activation), all 1;
* importance: ``I_u = Σ_batches |∂L/∂g_u|`` (first-order Taylor), eval mode, then normalised per layer by
  the layer's L2 norm (``normalize_scores_by_layer``, exponent 2);
* selection: ranked globally (heads and neurons separately, lowest first); ``int(total · p)`` of the
  *original* totals are gone after a step to fraction ``p``; the most important ``min_heads`` heads of
  each layer are protected (the reference's ``at_least_x_heads_per_layer``); we also keep one neuron per
  layer so that no FFN becomes empty;
* removal: heads with transformers' ``prune_heads`` (which records them in ``config.pruned_heads``), FFN
  neurons with ``prune_linear_layer`` on ``intermediate.dense`` (rows) and ``output.dense`` (columns).

The per-layer FFN widths go to ``config.cap_intermediate_sizes``; :func:`robustprune.modeling.load_structured`
(which ``load_classifier`` calls for such a directory) rebuilds the smaller model from them. A plain ``from_pretrained`` of such a directory fails loudly with transformers'
size-mismatch error (the config's ``intermediate_size`` is the original width), never silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from robustprune.modeling import SIZES_KEY, is_structured, load_structured  # noqa: F401 - the CAP-f format
from robustprune.modeling import bert_encoder_layers as _layers


def head_counts(model: nn.Module) -> list[int]:
    return [layer.attention.self.num_attention_heads for layer in _layers(model)]


def ffn_widths(model: nn.Module) -> list[int]:
    return [layer.intermediate.dense.out_features for layer in _layers(model)]


@dataclass
class Gates:
    """Per-layer head gates (h_l,) and neuron gates (I_l,), applied by forward hooks until :meth:`remove`."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]
    handles: list

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def attach_gates(model: nn.Module, requires_grad: bool = True) -> Gates:
    """Gates of 1 on every head and FFN neuron (set entries to 0 to switch units off)."""
    gates = Gates(heads=[], neurons=[], handles=[])
    for layer in _layers(model):
        att = layer.attention.self
        dev = att.query.weight.device
        g_h = torch.ones(att.num_attention_heads, device=dev, requires_grad=requires_grad)
        g_n = torch.ones(layer.intermediate.dense.out_features, device=dev, requires_grad=requires_grad)
        gates.heads.append(g_h)
        gates.neurons.append(g_n)

        def head_hook(module, _inp, out, g=g_h):  # noqa: ANN001, ANN202
            ctx = out[0]  # (B, T, h·d): the heads' context vectors side by side
            b, t, _ = ctx.shape
            ctx = (ctx.view(b, t, g.numel(), -1) * g.view(1, 1, -1, 1)).view(b, t, -1)
            return (ctx, *out[1:])

        def neuron_hook(module, _inp, out, g=g_n):  # noqa: ANN001, ANN202
            return out * g

        gates.handles.append(att.register_forward_hook(head_hook))
        gates.handles.append(layer.intermediate.register_forward_hook(neuron_hook))
    return gates


@dataclass(frozen=True)
class Importance:
    heads: list[torch.Tensor]  # per layer (h_l,)
    neurons: list[torch.Tensor]  # per layer (I_l,)


def importance(
    model: nn.Module, losses: Iterable[Callable[[nn.Module], torch.Tensor]], *, normalize: bool = True
) -> Importance:
    """Σ |∂L/∂gate| over the given loss closures (each runs one batch through ``model``), eval mode.

    Normalised per layer by the L2 norm of the layer's scores (the reference's default).
    """
    was_training = model.training
    model.eval()
    gates = attach_gates(model)
    acc_h = [torch.zeros_like(g) for g in gates.heads]
    acc_n = [torch.zeros_like(g) for g in gates.neurons]
    try:
        for loss_fn in losses:
            loss = loss_fn(model)
            grads = torch.autograd.grad(loss, gates.heads + gates.neurons, allow_unused=True)
            k = len(gates.heads)
            for a, g in zip(acc_h + acc_n, grads[:k] + grads[k:], strict=True):
                if g is not None:
                    a += g.detach().abs()
    finally:
        gates.remove()
        model.train(was_training)
    if normalize:
        acc_h = [a / (a.pow(2).sum().sqrt() + 1e-20) for a in acc_h]
        acc_n = [a / (a.pow(2).sum().sqrt() + 1e-20) for a in acc_n]
    return Importance(heads=acc_h, neurons=acc_n)


def select_heads(scores: list[torch.Tensor], n_prune: int, min_heads: int = 1) -> list[list[int]]:
    """Current positions of the ``n_prune`` least important heads, ranked globally; each layer's
    ``min_heads`` most important heads are protected. Returns one sorted list per layer."""
    candidates = []
    for layer, s in enumerate(scores):
        order = torch.argsort(s, descending=True, stable=True).tolist()
        candidates += [(float(s[h]), layer, h) for h in order[min_heads:]]
    if n_prune > len(candidates):
        raise ValueError(
            f"cannot remove {n_prune} heads keeping {min_heads} per layer: only {len(candidates)} removable"
        )
    candidates.sort(key=lambda x: (x[0], x[1], x[2]))
    out: list[list[int]] = [[] for _ in scores]
    for _, layer, h in candidates[: max(n_prune, 0)]:
        out[layer].append(h)
    return [sorted(x) for x in out]


def select_neurons(scores: list[torch.Tensor], n_prune: int, min_neurons: int = 1) -> list[list[int]]:
    """Current positions of the ``n_prune`` least important FFN neurons, ranked globally over layers."""
    return select_heads(scores, n_prune, min_neurons)


def prune_count(total: int, fraction: float, already: int) -> int:
    """Units to remove now so that ``int(total · fraction)`` of the original ``total`` are gone."""
    return max(int(total * fraction) - already, 0)


@torch.no_grad()
def remove_units(model: nn.Module, heads: list[list[int]], neurons: list[list[int]]) -> None:
    """Physically remove heads and FFN neurons given by their *current* positions in each layer."""
    from transformers.pytorch_utils import prune_linear_layer

    layers = _layers(model)
    if len(heads) != len(layers) or len(neurons) != len(layers):
        raise ValueError(f"need one list per layer ({len(layers)}), got {len(heads)} / {len(neurons)}")
    to_prune: dict[int, list[int]] = {}
    n_heads = model.config.num_attention_heads
    for i, (layer, hs) in enumerate(zip(layers, heads, strict=True)):
        if not hs:
            continue
        remaining = sorted(set(range(n_heads)) - set(layer.attention.pruned_heads))
        if len(set(hs)) >= len(remaining):
            raise ValueError(f"layer {i}: removing heads {hs} would leave none of {len(remaining)}")
        to_prune[i] = [remaining[h] for h in hs]
    if to_prune:
        model.prune_heads(to_prune)
    for i, (layer, ns) in enumerate(zip(layers, neurons, strict=True)):
        if not ns:
            continue
        width = layer.intermediate.dense.out_features
        drop = set(ns)
        keep = torch.tensor([j for j in range(width) if j not in drop], dtype=torch.long)
        if not len(keep):
            raise ValueError(f"layer {i}: removing neurons would leave an empty FFN")
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    setattr(model.config, SIZES_KEY, ffn_widths(model))


def encoder_parameters(model: nn.Module) -> int:
    """Parameters inside the encoder blocks (embeddings, pooler and classifier excluded)."""
    return sum(p.numel() for p in _layers(model).parameters())
