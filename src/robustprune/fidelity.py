"""Representation fidelity: how much of the dense model's feature space a pruned model keeps.

RAKP's claim (Li et al. 2023, Sec. 3 and 4.2) is that robustness is proportional to the pre-trained knowledge a
pruned model retains, which the paper measures as the fidelity of its embedding- and feature-space
representations to the dense model's. We measure, per model and per layer (the embedding output and every
block's output), the cosine similarity of its mean-pooled representation of each clean test text to the dense
soup's representation of the same text (mean pooling over real tokens, as MiniLM's sentence embeddings), and,
for attacked models, the cosine between its representation of each clean text and of that text's adversarial
version (a robust model moves its representation little).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustprune.batching import encode_batch, mean_pool, run_length_sorted
from robustprune.records import Record


@torch.inference_mode()
def forward_with_representations(
    model: nn.Module,
    tokenizer,  # noqa: ANN001 - transformers tokenizer
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, torch.Tensor]:
    """Logits ``(n, num_labels)`` and mean-pooled hidden states ``(layers + 1, n, hidden)`` in text order.

    Texts are sorted by length and padded per batch (as :func:`robustprune.metrics.predict_logits`), so the
    logits equal that function's.
    """
    model.eval().to(device)

    def forward(batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = encode_batch(tokenizer, batch, max_length=max_length, device=device)
        out = model(**enc, output_hidden_states=True)
        pooled = torch.stack([mean_pool(h, enc["attention_mask"]) for h in out.hidden_states], dim=1)
        return out.logits.float().cpu(), pooled.cpu()  # rows first: (b, labels), (b, layers + 1, hidden)

    rows = run_length_sorted(texts, forward, batch_size=batch_size)
    if rows is None:
        return np.zeros((0, 0), dtype=np.float32), torch.zeros(0, 0, 0)
    logits, reps = rows
    return logits.numpy(), reps.transpose(0, 1).contiguous()


def layer_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per layer and example of two ``(layers, n, hidden)`` representation stacks."""
    if a.shape != b.shape:
        raise ValueError(f"representations differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).float()


@dataclass(frozen=True)
class Fidelity(Record):
    """Mean cosine over examples, per layer (0 = embeddings), their mean, and the last layer's."""

    per_layer: list[float]
    mean: float
    last: float
    n: int


def summarize_cosine(cos: torch.Tensor) -> Fidelity:
    """Summary of a ``(layers, n)`` cosine table."""
    if cos.numel() == 0:
        return Fidelity([], float("nan"), float("nan"), 0)
    per_layer = cos.mean(dim=1).tolist()
    return Fidelity(per_layer, float(np.mean(per_layer)), per_layer[-1], int(cos.shape[1]))
