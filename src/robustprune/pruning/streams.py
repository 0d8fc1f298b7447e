"""The two input streams of a transformer block, and how a block is called on them.

SparseGPT (Frantar & Alistarh 2023, App. "sequential pruning") feeds block l the outputs of the model whose
blocks < l are already pruned; RAKP (Li et al. 2023, Sec. 4.2) also needs what the DENSE model computes at
the same tokens. :class:`BlockInputs` holds both streams per calibration batch, plus what the block is
called with besides its hidden states (attention masks, rotary embeddings, ...: the "extras", captured
once from the embeddings by :func:`capture_block_inputs`; they do not depend on any block's weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustprune.modeling import architecture_of, find_blocks

Extra = tuple[tuple, dict[str, Any]]  # a block call's positional args after the hidden states, keyword args


@dataclass
class BlockInputs:
    """Inputs of one block for every calibration batch: two hidden-state streams plus the call's extras."""

    pruned: list[torch.Tensor]  # (B, T, d) per batch: X̃, from the model pruned so far
    dense: list[torch.Tensor]  # (B, T, d) per batch: X, from the dense model (empty when not tracked)
    extras: list[Extra]  # positional args after hidden states, keyword args
    token_mask: list[torch.Tensor]  # (B, T) bool: real (non-padding) tokens

    def subset(self, idx: Sequence[int]) -> BlockInputs:
        """The same inputs for the batches ``idx`` only."""
        return BlockInputs(
            pruned=[self.pruned[i] for i in idx],
            dense=[self.dense[i] for i in idx],
            extras=[self.extras[i] for i in idx],
            token_mask=[self.token_mask[i] for i in idx],
        )


class Stop(Exception):
    """Raised by a hook to cut a forward pass short once it has what it needs."""


@torch.inference_mode()
def capture_block_inputs(
    model: nn.Module, batches: Sequence[dict[str, torch.Tensor]], device: torch.device | str = "cpu"
) -> BlockInputs:
    """Run the embeddings only and catch what the first block is called with (the "Catcher" trick).

    Both streams start as the same tensors (the embeddings are never pruned).
    """
    blocks = find_blocks(model)
    calls: list[Extra] = []

    def hook(_mod: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        calls.append((args, dict(kwargs)))
        raise Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    is_decoder = architecture_of(model).groups[0][0].startswith("self_attn")
    masks = []
    try:
        model.to(device).eval()
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            with contextlib.suppress(Stop):
                model(**b, use_cache=False) if is_decoder else model(**b)
            am = b.get("attention_mask")
            masks.append(
                am.bool()
                if am is not None
                else torch.ones(b["input_ids"].shape, dtype=torch.bool, device=device)
            )
    finally:
        handle.remove()
    hidden, extras = [], []
    for args, kwargs in calls:
        if args:
            h, rest = args[0], tuple(args[1:])
        else:
            h, rest = kwargs.pop("hidden_states"), ()
        hidden.append(h.detach())
        extras.append((rest, kwargs))
    return BlockInputs(
        pruned=hidden, dense=list(hidden), extras=extras, token_mask=masks
    )  # nothing mutates them


def block_forward(block: nn.Module, hidden: torch.Tensor, extra: Extra) -> torch.Tensor:
    """``block``'s output hidden states for one batch."""
    args, kwargs = extra
    out = block(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple | list) else out


def run_blocks(
    blocks: Sequence[nn.Module], hidden: Sequence[torch.Tensor], extras: Sequence[Extra]
) -> list[torch.Tensor]:
    """``hidden`` (one tensor per batch) through ``blocks`` in order."""
    out = list(hidden)
    for blk in blocks:
        out = [block_forward(blk, h, e) for h, e in zip(out, extras, strict=True)]
    return out


def relative_error(
    ref: Sequence[torch.Tensor], got: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]
) -> float:
    """``Σ ‖ref − got‖² / Σ ‖ref‖²`` over the real tokens (``masks``) of every batch."""
    num = sum(float(((r - g)[m].float() ** 2).sum()) for r, g, m in zip(ref, got, masks, strict=True))
    den = sum(float((r[m].float() ** 2).sum()) for r, m in zip(ref, masks, strict=True))
    return num / max(den, 1e-30)


def flatten_extras(extras: Sequence[Extra]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """The block calls' extras as named tensors plus a JSON-able skeleton (:func:`unflatten_extras` inverts it).

    Tensors, None, bool / int / float / str, and tuples, lists and str-keyed dicts of them: what BERT- and
    Llama-family blocks are called with. Tensors are copied (a safetensors file cannot hold two views of one
    storage). Raises TypeError naming the place of anything else (a KV-cache object, say).
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().clone()
            return {"tensor": path}
        if x is None or isinstance(x, bool | int | float | str):
            return {"value": x}
        if isinstance(x, tuple | list):
            return {type(x).__name__: [enc(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, dict) and all(isinstance(k, str) for k in x):
            return {"dict": {k: enc(v, f"{path}.{k}") for k, v in x.items()}}
        raise TypeError(f"cannot persist the block call's {type(x).__name__} at {path!r}")

    skeleton = [enc(list(e), f"b{i}") for i, e in enumerate(extras)]
    return tensors, skeleton


def unflatten_extras(
    tensors: dict[str, torch.Tensor], skeleton: list[Any], device: torch.device | str = "cpu"
) -> list[Extra]:
    """The extras :func:`flatten_extras` took apart, with their tensors on ``device``."""

    def dec(node: dict[str, Any]) -> Any:
        ((kind, val),) = node.items()
        if kind == "tensor":
            return tensors[val].to(device)
        if kind == "value":
            return val
        if kind == "dict":
            return {k: dec(v) for k, v in val.items()}
        items = [dec(v) for v in val]
        return tuple(items) if kind == "tuple" else items

    out = []
    for node in skeleton:
        args, kwargs = dec(node)
        out.append((tuple(args), kwargs))
    return out
