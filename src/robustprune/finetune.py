"""Fine-tuning one soup ingredient: plain AdamW with linear warm-up and decay.

The soup (Wortsman et al. 2022) only works when ingredients share an initialisation, so the caller builds
every variant from the same pre-trained weights and the same seeded classification head; a variant
differs by learning rate, epochs and the seed that orders its data and drives dropout.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class FinetuneSettings:
    learning_rate: float
    epochs: float = 1.0
    seed: int = 0
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64


@dataclass
class FinetuneResult:
    steps: int
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-20:]
        return float(np.mean(tail)) if tail else float("nan")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    return max(0.0, (total - step) / max(total - warmup, 1))


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, gen: np.random.Generator, bucket: int = 50
) -> list[np.ndarray]:
    """One epoch of batches: shuffle, sort by length inside windows of ``bucket`` batches, shuffle batches.

    Every example appears exactly once; batches hold texts of similar length, so padding to the longest
    in the batch wastes little (about 1.5x faster on short snippets than purely random batches).
    """
    perm = gen.permutation(len(lengths))
    window = batch_size * bucket
    batches = []
    for s in range(0, len(perm), window):
        chunk = perm[s : s + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in gen.permutation(len(batches))]


def finetune(
    model: nn.Module,
    tokenizer,  # noqa: ANN001 - transformers tokenizer
    texts: Sequence[str],
    labels: Sequence[int],
    settings: FinetuneSettings,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "finetune",
) -> FinetuneResult:
    """Train ``model`` in place on (texts, labels); returns the loss curve."""
    seed_everything(settings.seed)
    model.to(device).train()
    n = len(texts)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total = max(1, round(steps_per_epoch * settings.epochs))
    decay = [p for n_, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n_]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim < 2 or "LayerNorm" in n_]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, total, int(settings.warmup_ratio * total))
    )
    gen = np.random.default_rng(settings.seed)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    result = FinetuneResult(steps=total)
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
    order = [
        b
        for _ in range(math.ceil(settings.epochs))
        for b in length_bucketed_batches(lengths, settings.batch_size, gen)
    ]
    bar = tqdm(range(total), desc=desc, disable=not progress)
    for step in bar:
        idx = order[step % len(order)]
        enc = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=settings.max_length,
            return_tensors="pt",
        )
        out = model(**{k: v.to(device) for k, v in enc.items()}, labels=labels_t[idx].to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        result.losses.append(float(out.loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{result.final_loss:.3f}")
    model.eval()
    return result
