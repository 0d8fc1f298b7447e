"""Fine-tuning one soup ingredient: AdamW, Adam or SGD with momentum, linear warm-up and decay, optionally
adversarial (FreeLB, :mod:`robustprune.adversarial`) and/or on perturbed copies of the texts drawn afresh every
epoch (``augmenter``: :mod:`robustprune.augment`).

The soup (Wortsman et al. 2022) only works when ingredients share an initialisation, so the caller builds
every variant from the same pre-trained weights and the same seeded classification head; a variant
differs by learning rate, optimiser, weight decay, epochs, adversarial training and the seed that orders
its data and drives dropout (RAKP's ingredient table, Li et al. 2023, Sec. 4.1 / Table 8).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustprune.adversarial import FreeLBSettings, freelb_backward
from robustprune.interrupt import raise_if_stopped


@dataclass(frozen=True)
class FinetuneSettings:
    learning_rate: float
    epochs: float = 1.0
    seed: int = 0
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9  # sgd only
    adversarial: FreeLBSettings | None = None  # None (or steps 0): plain training


OPTIMIZERS = ("adamw", "adam", "sgd")


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


def make_optimizer(model: nn.Module, settings: FinetuneSettings) -> torch.optim.Optimizer:
    """The ingredient's optimiser; weight decay on matrices only (not biases or LayerNorm).

    AdamW decays decoupled from the gradient (Loshchilov & Hutter 2019); Adam and SGD add ``weight_decay · w``
    to the gradient (L2), as their torch implementations do.
    """
    decay = [p for n_, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n_]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim < 2 or "LayerNorm" in n_]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.learning_rate)
    if settings.optimizer == "adam":
        return torch.optim.Adam(groups, lr=settings.learning_rate)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.learning_rate, momentum=settings.momentum)
    raise ValueError(f"optimizer {settings.optimizer!r} is not one of {list(OPTIMIZERS)}")


class EpochCopies(Protocol):
    """Perturbed copies of the training texts, drawn anew each epoch (:meth:`robustprune.augment.Augmenter.bind`)."""

    copies: int

    def __call__(self, epoch: int) -> Sequence[str]: ...


def _augmented_batches(
    texts: Sequence[str],
    labels: torch.Tensor,
    augmenter: EpochCopies,
    batch_size: int,
    gen: np.random.Generator,
    total: int,
) -> Iterator[tuple[list[str], torch.Tensor, np.ndarray]]:
    """``total`` batches over (texts + this epoch's copies), a new draw of copies at every epoch start."""
    step, epoch = 0, 0
    while step < total:
        extra = list(augmenter(epoch))
        if len(extra) % max(len(texts), 1):
            raise ValueError(
                f"augmenter returned {len(extra)} copies for {len(texts)} texts (not a multiple)"
            )
        epoch_texts = list(texts) + extra
        epoch_labels = labels.repeat(len(epoch_texts) // len(texts))
        lengths = np.fromiter((len(t) for t in epoch_texts), dtype=np.int64, count=len(epoch_texts))
        for idx in length_bucketed_batches(lengths, batch_size, gen):
            if step == total:
                return
            yield epoch_texts, epoch_labels, idx
            step += 1
        epoch += 1


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
    augmenter: EpochCopies | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> FinetuneResult:
    """Train ``model`` in place on (texts, labels); returns the loss curve.

    ``augmenter(epoch)`` (optional) returns ``augmenter.copies`` perturbed copies of every text for that epoch
    (copy-major, as :meth:`robustprune.augment.Augmenter.bind` gives); an epoch then runs over the texts and
    their copies (same labels), so it has ``1 + copies`` times the steps, and ``settings.epochs`` still counts
    passes over the original texts. ``callback(step, total)`` (optional) runs after each optimiser step (e.g.
    to evaluate checkpoints; the model is put back in train mode after it).
    """
    seed_everything(settings.seed)
    model.to(device).train()
    n = len(texts)
    per_epoch = n if augmenter is None else n * (1 + augmenter.copies)  # texts (and copies) an epoch sees
    steps_per_epoch = math.ceil(per_epoch / settings.batch_size)
    total = max(1, round(steps_per_epoch * settings.epochs))
    opt = make_optimizer(model, settings)
    adv = settings.adversarial if settings.adversarial and settings.adversarial.steps > 0 else None
    adv_gen = torch.Generator().manual_seed(settings.seed) if adv else None
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, total, int(settings.warmup_ratio * total))
    )
    gen = np.random.default_rng(settings.seed)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if augmenter is None:
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
        order = [
            b
            for _ in range(math.ceil(settings.epochs))
            for b in length_bucketed_batches(lengths, settings.batch_size, gen)
        ]
        batches: Iterator = ((texts, labels_t, order[step % len(order)]) for step in range(total))
    else:
        batches = _augmented_batches(texts, labels_t, augmenter, settings.batch_size, gen, total)
    result = FinetuneResult(steps=total)
    bar = tqdm(range(total), desc=desc, disable=not progress)
    for step, (step_texts, step_labels, idx) in zip(bar, batches, strict=True):
        raise_if_stopped()  # SIGTERM / SIGINT: stop within one step (robustprune.interrupt)
        enc = tokenizer(
            [step_texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=settings.max_length,
            return_tensors="pt",
        )
        batch = {k: v.to(device) for k, v in enc.items()}
        y = step_labels[idx].to(device)
        if adv is None:
            out = model(**batch, labels=y)
            out.loss.backward()
            loss = float(out.loss.detach())
        else:
            loss = freelb_backward(model, batch, y, adv, generator=adv_gen).loss
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        result.losses.append(loss)
        if callback is not None:
            callback(step + 1, total)
            model.train()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{result.final_loss:.3f}")
    model.eval()
    return result
