"""SDS: sparse-dense-sparse, a second chance for a one-shot pruned model (the model driver).

Li et al., "Enhancing One-shot Pruned Pre-trained Language Models through Sparse-Dense-Sparse Mechanism"
(arXiv:2408.10473, COLING 2025). Three steps, each callable on its own on a model loaded from disk:

1. **sparse**: one-shot prune with any engine method and pattern (``prune_model``, the existing driver);
2. **dense** (:func:`reactivate_model`): restore the pruned connections and reconstruct every Linear,
   block by block, so that it reproduces the DENSE model's output, under a sparsity-promoting penalty on
   the re-activated positions (the paper's second step, "re-dense weight reconstruction" by layer-wise
   distillation from the dense teacher): the dense weights come out close to a sparse solution, a
   pruning-friendly distribution;
3. **sparse** again: ``prune_model`` with the same method and pattern on the re-activated model, then
   optionally :func:`adjust_model`, a short reconstruction of the surviving weights with the mask fixed.

This module walks the model: block by block, and within a block group by group (the Linears that read one
input), it collects each group's statistics on the two streams (:func:`group_stats`: inputs from the model
reconstructed so far, targets from the dense model) and hands every Linear to the layer solver of
:mod:`robustprune.sds_layer` (the quadratic, the penalties, ISTA / FISTA / Adam), which also defines
:class:`SDSOptions`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustprune.interrupt import raise_if_stopped
from robustprune.modeling import architecture_of, find_blocks, linear_groups
from robustprune.pruning.hessian import accumulate_cross, accumulate_xtx
from robustprune.pruning.streams import BlockInputs, Stop, block_forward, capture_block_inputs, relative_error
from robustprune.sds_layer import (
    INITS,
    OPTIMIZERS,
    REGULARIZERS,
    LayerFit,
    LayerStats,
    SDSOptions,
    adjust_layer,
    fit_layer,
    lipschitz,
    objective,
    penalty_weights,
    quadratic_stats,
    reactivate_layer,
)

__all__ = [
    "INITS",
    "OPTIMIZERS",
    "REGULARIZERS",
    "GroupStats",
    "LayerFit",
    "LayerStats",
    "SDSBlockReport",
    "SDSOptions",
    "adjust_layer",
    "adjust_model",
    "fit_layer",
    "group_stats",
    "lipschitz",
    "objective",
    "penalty_weights",
    "quadratic_stats",
    "reactivate_layer",
    "reactivate_model",
]


@dataclass
class SDSBlockReport:
    index: int
    layers: list[LayerFit] = field(default_factory=list)
    output_error: float = 0.0  # ‖Y_dense − Y_model‖² / ‖Y_dense‖² at the block's output
    seconds: float = 0.0


def _group_inputs(
    block: nn.Module,
    dense_block: nn.Module,
    names: Sequence[str],
    x_model: Tensor,
    x_dense: Tensor,
    extra: tuple[tuple, dict[str, Any]],
    tmask: Tensor,
    finish_dense: bool = False,
) -> tuple[Tensor, Tensor, dict[str, float], Tensor | None]:
    """One batch: the group's input on the model stream, on the dense stream, ``‖Y‖²`` per Linear.

    Both forwards are cut short with an exception once the hooks have what they need: ``block`` at the
    group's first Linear's input, ``dense_block`` after the group's last Linear ran, unless
    ``finish_dense``: then the dense block runs to its end and its output is returned too (else None).
    """
    mods, dmods = dict(block.named_modules()), dict(dense_block.named_modules())
    got: dict[str, Any] = {}

    def take_input(_mod: nn.Module, inp: tuple) -> None:
        got["x"] = inp[0][tmask].float()
        raise Stop

    def take_dense(key: str) -> Callable:
        def hook(mod: nn.Module, inp: tuple, out: Tensor) -> None:
            got.setdefault("xd", inp[0][tmask].float())
            y = out[tmask].float()
            if getattr(mod, "bias", None) is not None:
                y = y - mod.bias.float()
            got[key] = float(y.square().sum())
            if not finish_dense and all(k in got for k in names):
                raise Stop

        return hook

    handles = [mods[names[0]].register_forward_pre_hook(take_input)]
    handles += [dmods[k].register_forward_hook(take_dense(k)) for k in names]
    try:
        with contextlib.suppress(Stop):
            block_forward(block, x_model, extra)
        with contextlib.suppress(Stop):
            got["out"] = block_forward(dense_block, x_dense, extra)
    finally:
        for h in handles:
            h.remove()
    return got["x"], got["xd"], {k: got[k] for k in names}, got.get("out")


@dataclass
class GroupStats:
    """One Linear group's statistics: ``H = 2/N X̃ᵀX̃``, ``G = 2/N XᵀX̃``, ``1/N ‖Y‖²`` per Linear."""

    H: Tensor
    G: Tensor  # B = W_d G for each Linear of the group
    y_sq: dict[str, float]
    dense_out: list[Tensor] | None = None  # the dense block's outputs, when asked for


@torch.inference_mode()
def group_stats(
    block: nn.Module,
    dense_block: nn.Module,
    names: Sequence[str],
    inputs: BlockInputs,
    *,
    dense_outputs: bool = False,
) -> GroupStats:
    """Statistics of one Linear group (the Linears that read one input) on the two streams.

    Runs ``block`` (the model being reconstructed, with its current weights) on ``inputs.pruned`` up to
    the group's input, and ``dense_block`` on ``inputs.dense`` through the group's Linears (to its end
    with ``dense_outputs``, whose outputs then come back too: the last group saves a dense forward).
    ``y_sq`` is the dense output without its bias. Padding tokens are dropped.
    """
    H = cross = None
    y_sq = dict.fromkeys(names, 0.0)
    outs: list[Tensor] = []
    n = 0
    for x_model, x_dense, extra, tmask in zip(
        inputs.pruned, inputs.dense, inputs.extras, inputs.token_mask, strict=True
    ):
        x, xd, ysum, out = _group_inputs(
            block, dense_block, names, x_model, x_dense, extra, tmask, dense_outputs
        )
        if out is not None:
            outs.append(out)
        for k in names:
            y_sq[k] = (y_sq[k] * n + ysum[k]) / max(n + x.shape[0], 1)
        H, _ = accumulate_xtx(H, x, n)
        cross, n = accumulate_cross(cross, xd, x, n)
    if H is None or cross is None:
        raise ValueError("group_stats needs at least one calibration batch")
    return GroupStats(H=H, G=cross + H, y_sq=y_sq, dense_out=outs if dense_outputs else None)


def _mask_for(masks: Mapping[str, Tensor] | None, keys: Sequence[str], weight: Tensor) -> Tensor:
    """The layer's keep-mask from ``masks`` (any of ``keys``), else the weight's non-zeros."""
    if masks is not None:
        for k in keys:
            if k in masks:
                return masks[k].to(weight.device).bool()
    return weight != 0


def _block_prefix(model: nn.Module) -> str:
    arch, blocks = architecture_of(model), find_blocks(model)
    for path in arch.block_paths:
        node: Any = model
        for part in path.split("."):
            node = getattr(node, part, None)
        if node is blocks:
            return path
    return ""


LayerFitter = Callable[[Tensor, Tensor, LayerStats, str], tuple[Tensor, LayerFit]]


@torch.inference_mode()
def _reconstruct_model(
    model: nn.Module,
    dense_model: nn.Module,
    batches: Sequence[dict[str, Tensor]],
    masks: Mapping[str, Tensor] | None,
    fitter: LayerFitter,
    start: str,
    modules: str | None,
    *,
    device: torch.device | str,
    progress: bool,
    desc: str,
) -> list[SDSBlockReport]:
    """Block by block, group by group: collect the group's statistics on both streams, refit its Linears."""
    model_in = capture_block_inputs(model, batches, device)
    dense_in = capture_block_inputs(dense_model, batches, device)
    # the first block's inputs are usually the same on both streams (the embeddings are never pruned):
    # share those tensors instead of holding two copies (64 × 512 tokens × 576 float32 = 75 MB for SmolLM2)
    dense_x = [m if torch.equal(m, d) else d for m, d in zip(model_in.pruned, dense_in.pruned, strict=True)]
    inputs = BlockInputs(model_in.pruned, dense_x, model_in.extras, model_in.token_mask)
    del model_in, dense_in, dense_x
    prefix = _block_prefix(model)
    blocks, dense_blocks = find_blocks(model), find_blocks(dense_model)
    if len(blocks) != len(dense_blocks):
        raise ValueError(f"model has {len(blocks)} blocks, dense model {len(dense_blocks)}")
    reports = []
    for i in tqdm(range(len(blocks)), desc=desc, disable=not progress):
        raise_if_stopped()  # SIGTERM / SIGINT: stop between blocks (robustprune.interrupt)
        t0 = time.perf_counter()
        block, dense_block = blocks[i], dense_blocks[i]
        report = SDSBlockReport(index=i)
        dense_mods = dict(dense_block.named_modules())
        groups = linear_groups(model, block, modules)
        dense_out: list[Tensor] | None = None
        for gi, group in enumerate(groups):
            names = list(group)
            gs = group_stats(block, dense_block, names, inputs, dense_outputs=gi == len(groups) - 1)
            dense_out = gs.dense_out if gs.dense_out is not None else dense_out
            for name in names:
                lin, W_d = group[name], dense_mods[name].weight.detach().float()
                if W_d.shape != lin.weight.shape:
                    raise ValueError(
                        f"block {i} {name}: dense weight {tuple(W_d.shape)} != {tuple(lin.weight.shape)}"
                    )
                stats = LayerStats(H=gs.H, B=W_d @ gs.G, y_sq=gs.y_sq[name])
                mask = _mask_for(masks, (f"{prefix}.{i}.{name}", f"{i}.{name}"), lin.weight)
                W0 = W_d if start == "dense" else lin.weight.detach().float()
                W, fit = fitter(W0, mask, stats, name)
                lin.weight.data.copy_(W.to(lin.weight.dtype))
                report.layers.append(fit)
        model_out = [block_forward(block, x, e) for x, e in zip(inputs.pruned, inputs.extras, strict=True)]
        if dense_out is None:  # no prunable Linear selected in this block
            dense_out = [
                block_forward(dense_block, x, e) for x, e in zip(inputs.dense, inputs.extras, strict=True)
            ]
        report.output_error = relative_error(dense_out, model_out, inputs.token_mask)
        inputs = BlockInputs(model_out, dense_out, inputs.extras, inputs.token_mask)
        report.seconds = time.perf_counter() - t0
        reports.append(report)
    return reports


def reactivate_model(
    model: nn.Module,
    dense_model: nn.Module,
    batches: Sequence[dict[str, Tensor]],
    masks: Mapping[str, Tensor] | None,
    opts: SDSOptions,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[SDSBlockReport]:
    """SDS step 2, in place on the pruned ``model``: re-dense reconstruction against ``dense_model``.

    ``masks`` are the first prune's keep-masks, keyed by full Linear name
    (``model.layers.3.self_attn.q_proj``) or as ``prune_model`` returns them (``3.self_attn.q_proj``);
    None takes each weight's non-zeros (a pruned model loaded from disk). Each Linear sees inputs from
    ``model`` as reconstructed so far (earlier blocks, and earlier groups of its block) and is fitted to
    ``dense_model``'s output of the same Linear on the dense stream (module doc).
    """

    def fit(W0: Tensor, mask: Tensor, stats: LayerStats, name: str) -> tuple[Tensor, LayerFit]:
        return reactivate_layer(W0, mask, stats, opts, name=name)

    return _reconstruct_model(
        model,
        dense_model,
        batches,
        masks,
        fit,
        opts.init,
        opts.modules,
        device=device,
        progress=progress,
        desc="sds reactivate",
    )


def adjust_model(
    model: nn.Module,
    dense_model: nn.Module,
    batches: Sequence[dict[str, Tensor]],
    masks: Mapping[str, Tensor] | None,
    opts: SDSOptions,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[SDSBlockReport]:
    """SDS step 3's optional adjustment, in place: ``final_adjust_steps`` of mask-fixed reconstruction.

    ``masks`` are the re-prune's keep-masks (same keys as :func:`reactivate_model`; None = the
    non-zeros). Inputs come from ``model`` as adjusted so far, targets from ``dense_model``'s dense
    stream; pruned entries stay exactly zero.
    """

    def fit(W0: Tensor, mask: Tensor, stats: LayerStats, name: str) -> tuple[Tensor, LayerFit]:
        return adjust_layer(W0, mask, stats, opts, name=name)

    return _reconstruct_model(
        model,
        dense_model,
        batches,
        masks,
        fit,
        "pruned",
        opts.modules,
        device=device,
        progress=progress,
        desc="sds adjust",
    )
