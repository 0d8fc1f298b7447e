"""Batched inference and the clean-accuracy metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustprune.batching import encode_batch, run_length_sorted
from robustprune.interrupt import raise_if_stopped


@dataclass(frozen=True)
class Accuracy:
    accuracy: float
    correct: int
    total: int


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    tokenizer,  # noqa: ANN001 - transformers tokenizer
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Logits (n, num_labels) in the order of ``texts``.

    Texts are sorted by length and padded per batch to the longest in it (not to the tokenizer's
    model_max_length), which is what makes CPU inference fast on short snippets.
    """
    model.eval().to(device)

    def forward(batch: list[str]) -> torch.Tensor:
        raise_if_stopped()  # evaluations run in task-runner worker threads: stop between batches
        enc = encode_batch(tokenizer, batch, max_length=max_length, device=device)
        return model(**enc).logits.float().cpu()

    def bar(batches: list) -> tqdm:
        return tqdm(batches, desc=desc, disable=not progress, leave=False)

    out = run_length_sorted(texts, forward, batch_size=batch_size, batches=bar)
    return out.numpy() if out is not None else np.zeros((0, 0), dtype=np.float32)


def accuracy(logits: np.ndarray, labels: Sequence[int]) -> Accuracy:
    labels_arr = np.asarray(labels)
    correct = int((logits.argmax(-1) == labels_arr).sum()) if len(labels_arr) else 0
    return Accuracy(accuracy=correct / max(len(labels_arr), 1), correct=correct, total=len(labels_arr))


def evaluate_accuracy(
    model: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[int], **kwargs
) -> Accuracy:  # noqa: ANN001
    """Clean accuracy of a classifier on (texts, labels)."""
    return accuracy(predict_logits(model, tokenizer, texts, **kwargs), labels)
