"""Calibration data: a seeded sample of training texts, tokenised once, batched for the pruning driver."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robustprune.checkpoints import load_tensors


def sample_texts(texts: Sequence[str], num_samples: int, seed: int) -> list[str]:
    """``num_samples`` distinct texts drawn without replacement (all of them if fewer exist)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(texts))[: min(num_samples, len(texts))]
    return [texts[i] for i in sorted(idx)]


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """input_ids and attention_mask, padded to the longest text (at most ``max_length`` tokens)."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def batches(calib: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Split a tokenised calibration set into model-ready batches, each trimmed to its longest row."""
    n = calib["input_ids"].shape[0]
    out = []
    for s in range(0, n, batch_size):
        b = {k: v[s : s + batch_size] for k, v in calib.items()}
        if "attention_mask" in b:
            width = int(b["attention_mask"].sum(1).max())
            b = {k: v[:, :width] for k, v in b.items()}
        out.append(b)
    return out


def load_batches(path: str | Path, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """The calibration set saved at ``path`` (safetensors), in :func:`batches` of ``batch_size``."""
    return batches(load_tensors(path), batch_size)
