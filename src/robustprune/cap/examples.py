"""The training examples CAP works on: tokenised once, addressed by example id (the banks' index)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Examples:
    """Tokenised texts (no padding) and labels; example ``i`` is row ``i`` of every memory bank."""

    input_ids: tuple[tuple[int, ...], ...]
    labels: torch.Tensor  # (N,) long
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def from_texts(
        cls,
        tokenizer,  # noqa: ANN001 - transformers tokenizer
        texts: Sequence[str],
        labels: Sequence[int],
        max_length: int,
    ) -> Examples:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if not len(texts):
            raise ValueError("CAP needs at least one training example")
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        return cls(
            input_ids=tuple(tuple(x) for x in enc["input_ids"]),
            labels=torch.as_tensor(np.asarray(labels), dtype=torch.long),
            pad_id=int(tokenizer.pad_token_id or 0),
        )

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))

    def batch(self, idx: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask / token_type_ids (B, T), padded to the longest in the batch."""
        rows = [self.input_ids[int(i)] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}

    def inference_batches(self, batch_size: int) -> list[np.ndarray]:
        """Every example once, in batches of similar length (for the no-grad bank passes)."""
        order = np.argsort(self.lengths(), kind="stable")
        return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
