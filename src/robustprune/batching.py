"""Length-bucketed batched inference: sort texts by length, run batches, put the rows back in text order.

Every batch is padded to its longest text only, so sorting by length first keeps padding (and the wasted
attention) small: the victim costs 7.3 ms/text in length-sorted batches of 8 against 12-14.5 ms unsorted
(``benchmarks/results/victim_batch.json``). The classifier metrics, the representation fidelity, transfer
scoring, the attack victim wrapper and the sentence encoder all run their forwards through
:func:`run_length_sorted`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch

Rows = TypeVar("Rows", torch.Tensor, tuple[torch.Tensor, ...])


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Indices of ``texts`` in batches of ``batch_size``, shortest texts first (a stable sort on characters)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(texts), batch_size)]


def encode_batch(
    tokenizer,  # noqa: ANN001 - transformers tokenizer
    texts: Sequence[str],
    *,
    max_length: int,
    device: torch.device | str,
) -> dict[str, torch.Tensor]:
    """Token ids and masks of ``texts``, padded to the longest of them, truncated at ``max_length``, on ``device``."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``(b, L, d)`` over the real tokens of ``attention_mask`` ``(b, L)``, in float32."""
    mask = attention_mask.unsqueeze(-1).float()
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def run_length_sorted(
    texts: Sequence[str],
    forward: Callable[[list[str]], Rows],
    *,
    batch_size: int,
    batches: Callable[[list[np.ndarray]], Iterable[np.ndarray]] = iter,
) -> Rows | None:
    """``forward`` on length-sorted batches of ``texts``; its rows (dim 0) returned in the order of ``texts``.

    ``forward`` maps a list of texts to a tensor (or a tuple of tensors) with one row per text; the result has
    the same structure with ``len(texts)`` rows, or is ``None`` when ``texts`` is empty. ``batches`` may wrap the
    list of index batches (a progress bar).
    """
    out: tuple[torch.Tensor, ...] | None = None
    single = True
    for idx in batches(length_sorted_batches(texts, batch_size)):
        rows = forward([texts[i] for i in idx])
        single = isinstance(rows, torch.Tensor)
        parts = (rows,) if single else tuple(rows)
        if out is None:
            out = tuple(p.new_zeros((len(texts), *p.shape[1:])) for p in parts)
        where = torch.as_tensor(idx, dtype=torch.long)
        for dest, part in zip(out, parts, strict=True):
            dest[where] = part
    if out is None:
        return None
    return out[0] if single else out
