"""One CAP training stage: AdamW steps on CAP's loss, with the masks following the sparsity schedule.

Used for every unstructured stage (ramp from the previous sparsity to the next, then hold) and for the
retraining after every structured step (no masks). A stage depends only on the model it starts from, the
examples, the banks and its seed, so a stage re-run after a crash gives identical weights: the batch
order (numpy), the extra negatives (a torch generator) and dropout (the global torch RNG) are all
seeded at the start of the stage. The optimiser and the learning-rate schedule (linear warm-up, linear
decay to 0) start afresh in every stage, as the reference's structured retraining does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustprune.cap import masks as cap_masks
from robustprune.cap.banks import encode, sample_extra, stack
from robustprune.cap.examples import Examples
from robustprune.cap.loss import LossWeights, cap_loss, forward_student
from robustprune.cap.schedule import (
    Stage,
    epoch_steps,  # noqa: F401  (re-exported: tasks and benchmarks import it here)
)
from robustprune.finetune import length_bucketed_batches
from robustprune.interrupt import raise_if_stopped


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation and loss settings of a stage (see ``cap`` in params.yaml)."""

    batch_size: int = 32
    lr: float = 1e-4
    score_lr: float = 1e-2
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    temperature: float = 0.1
    kd_temperature: float = 2.0
    extra_negatives: int = 256
    representation: str = "mean"
    weights: LossWeights = LossWeights()
    # soft movement: sigmoid threshold tau and L1 weight lambda follow the schedule (lambda ∝ tau, as the reference)
    soft_threshold: float = 0.1
    soft_lambda: float = 100.0
    mask_interval: int = 1  # steps between mask recomputations (the reference: every step)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)  # mean of each term over the stage
    snapshots: list[torch.Tensor] = field(default_factory=list)  # SnC vectors (N, H) taken in this stage
    snapshot_seconds: float = 0.0

    def tail_loss(self, k: int = 10) -> float:
        tail = self.losses[-k:]
        return float(np.mean(tail)) if tail else float("nan")


def _optimizer(model: nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    decay, no_decay, scores = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(".scores"):
            scores.append(p)
        elif p.ndim >= 2 and "LayerNorm" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": opts.weight_decay, "lr": opts.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": opts.lr},
    ]
    if scores:
        groups.append({"params": scores, "weight_decay": 0.0, "lr": opts.score_lr})
    return torch.optim.AdamW(groups, lr=opts.lr)


@dataclass(frozen=True)
class EpochSnapshots:
    """SnC as the reference takes it: the student encodes every example, without gradient and in train mode
    (dropout on), at the start of every epoch after the first — every ``every`` steps of the whole run, the
    dense warm-up included; each snapshot joins the ``snc`` bank at once. ``offset``: the run's steps before
    this stage. ``batch_size``: of the no-gradient pass."""

    every: int
    offset: int = 0
    batch_size: int = 128

    def due(self, step: int) -> bool:
        """Whether a snapshot is taken before the stage's ``step`` (0-based)."""
        g = self.offset + step
        return self.every > 0 and g > 0 and g % self.every == 0


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    return max(0.0, (total - step) / max(total - warmup, 1))


def train_stage(
    model: nn.Module,
    examples: Examples,
    teacher_logits: torch.Tensor | None,
    banks: dict[str, tuple[torch.Tensor, torch.Tensor]],
    opts: TrainOptions,
    *,
    steps: int,
    seed: int,
    stage: Stage | None = None,
    max_sparsity: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "cap",
    snapshots: EpochSnapshots | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` steps.

    With ``stage`` the model must carry masks (:func:`robustprune.cap.masks.attach`); every
    ``opts.mask_interval`` steps (and after the last) they are recomputed at ``stage.sparsity(step)`` (soft masks: threshold ``soft_threshold · s / max_sparsity``
    and L1 weight ``soft_lambda · s / max_sparsity``). ``banks`` maps a bank name to (vectors (N, R, H),
    labels (N,)). A stop request (SIGTERM / SIGINT, :mod:`robustprune.interrupt`) stops it within one step.

    With ``snapshots`` the student's own representations join the ``snc`` bank (created when absent, after
    the vectors already in it) whenever :meth:`EpochSnapshots.due`; they are returned in
    ``TrainResult.snapshots``. ``banks`` itself is not modified.
    """
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    extra_gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    soft = stage is not None and any(
        p.criterion == "soft" for p in cap_masks.parametrizations(model).values()
    )
    opt = _optimizer(model, opts)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(s, steps, int(opts.warmup_ratio * steps))
    )
    lengths = examples.lengths()
    order: list[np.ndarray] = []
    while len(order) < steps:
        order += length_bucketed_batches(lengths, opts.batch_size, gen)
    labels_all = examples.labels
    banks = dict(banks)
    result = TrainResult(steps=steps, seconds=0.0)
    sums: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        raise_if_stopped()  # SIGTERM / SIGINT: stop within one step (robustprune.interrupt)
        if snapshots is not None and snapshots.due(step):
            t_snap = time.perf_counter()
            snap = encode(
                model, examples, opts.representation, batch_size=snapshots.batch_size, device=device,
                train_mode=True,
            ).vectors.clone()  # fmt: skip
            earlier = [] if "snc" not in banks else list(banks["snc"][0].unbind(1))
            banks["snc"] = (stack([*earlier, snap]), labels_all)
            result.snapshots.append(snap)
            result.snapshot_seconds += time.perf_counter() - t_snap
        l1_weight = 0.0
        if stage is not None:
            s = stage.sparsity(step)
            frac = s / max_sparsity if max_sparsity > 0 else 0.0
            if step % opts.mask_interval == 0:
                if soft:
                    cap_masks.update_masks(model, s, threshold=opts.soft_threshold * frac)
                else:
                    cap_masks.update_masks(model, s)
            if soft:
                l1_weight = opts.soft_lambda * frac
        idx = torch.as_tensor(order[step], dtype=torch.long)
        batch = {k: v.to(device) for k, v in examples.batch(idx).items()}
        labels = labels_all[idx].to(device)
        logits, rep = forward_student(model, batch, opts.representation)
        extra = {
            name: sample_extra(len(examples), opts.extra_negatives, vec.shape[1], extra_gen)
            for name, (vec, _) in banks.items()
        }
        parts = cap_loss(
            logits,
            rep,
            idx.to(device),
            labels,
            None if teacher_logits is None else teacher_logits[idx].to(device),
            {k: (v.to(device), lb.to(device)) for k, (v, lb) in banks.items()},
            {k: v.to(device) for k, v in extra.items()},
            opts.weights,
            temperature=opts.temperature,
            kd_temperature=opts.kd_temperature,
        )
        loss = parts.total
        if l1_weight:
            loss = loss + l1_weight * cap_masks.l1_penalty(model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        result.losses.append(float(loss.detach()))
        sums["ce"] = sums.get("ce", 0.0) + parts.ce
        sums["kd"] = sums.get("kd", 0.0) + parts.kd
        for name, (u, s_) in parts.contrastive.items():
            sums[f"{name}_unsup"] = sums.get(f"{name}_unsup", 0.0) + u
            sums[f"{name}_sup"] = sums.get(f"{name}_sup", 0.0) + s_
        if step % 10 == 0:
            bar.set_postfix(loss=f"{result.tail_loss():.3f}")
    if stage is not None:  # the saved masks are the stage's final ones
        if soft:
            cap_masks.update_masks(
                model, stage.final, threshold=opts.soft_threshold * stage.final / max_sparsity
            )
        else:
            cap_masks.update_masks(model, stage.final)
    result.seconds = time.perf_counter() - t0
    result.parts = {k: v / max(steps, 1) for k, v in sums.items()}
    model.eval()
    return result
