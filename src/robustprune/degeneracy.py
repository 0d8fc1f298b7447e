"""Does a model read its input? Per-class recall, predicted-class shares and Cohen's κ (issue #23).

A model that predicts (nearly) one class everywhere cannot be attacked: its "accuracy under attack" is the
share of that class among the rows it happens to get right, not robustness. The report marks such a model
**near-constant** — recall below ``min_recall`` on some class that has examples — and gives it no
robustness verdict; clean-accuracy verdicts stay (a constant predictor is legitimately worse there).

Cohen's κ (Cohen 1960) against the labels: (p_o − p_e) / (1 − p_e), p_e = Σ_k P(label = k) · P(pred = k);
0 for a constant predictor, 1 for a perfect one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from robustprune.records import Record


@dataclass(frozen=True)
class ClassBalance(Record):
    """Per-class recall and predicted share (index = class id; NaN recall for a class with no example),
    Cohen's κ, and whether the model is near-constant under ``min_recall``."""

    n: int
    recall: tuple[float, ...]
    predicted_share: tuple[float, ...]
    kappa: float
    min_recall: float
    near_constant: bool

    def describe(self, label_names: Sequence[str] | None = None) -> str:
        """``"recall fresh 98.6 / rotten 1.4, κ 0.02"``."""
        names = list(label_names or []) + [str(i) for i in range(len(label_names or []), len(self.recall))]
        parts = " / ".join(
            f"{names[i]} {'–' if math.isnan(r) else f'{100 * r:.1f}'}" for i, r in enumerate(self.recall)
        )
        return f"recall {parts}, κ {self.kappa:.2f}"


def class_balance(
    labels: Sequence[int], predictions: Sequence[int], num_classes: int, min_recall: float = 0.1
) -> ClassBalance:
    """Recall of every class, the share of rows predicted as each class, κ, and the near-constant flag."""
    if len(labels) != len(predictions):
        raise ValueError(f"one prediction per label: {len(labels)} labels vs {len(predictions)} predictions")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    n = len(labels)
    if n == 0:
        nan = (math.nan,) * num_classes
        return ClassBalance(0, nan, nan, math.nan, min_recall, False)
    support = [0] * num_classes
    hits = [0] * num_classes
    predicted = [0] * num_classes
    for y, p in zip(labels, predictions, strict=True):
        if not (0 <= y < num_classes and 0 <= p < num_classes):
            raise ValueError(f"class ids must be in 0..{num_classes - 1}: label {y}, prediction {p}")
        support[y] += 1
        predicted[p] += 1
        hits[y] += y == p
    recall = tuple(h / s if s else math.nan for h, s in zip(hits, support, strict=True))
    share = tuple(p / n for p in predicted)
    p_o = sum(hits) / n
    p_e = sum((s / n) * (p / n) for s, p in zip(support, predicted, strict=True))
    kappa = 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)
    near = any(r < min_recall for r in recall if not math.isnan(r))
    return ClassBalance(n, recall, share, kappa, min_recall, near)


def predictions_from_correct(
    correct: Sequence[bool], labels: Sequence[int], num_classes: int = 2
) -> list[int]:
    """A binary classifier's predictions from its per-row correctness and the labels (older eval.json files
    kept correctness only). Refuses more than two classes, where a wrong row does not name its prediction."""
    if num_classes != 2:
        raise ValueError(f"predictions follow from correctness only for 2 classes, not {num_classes}")
    if len(correct) != len(labels):
        raise ValueError(f"one correctness flag per label: {len(correct)} vs {len(labels)}")
    bad = sorted({int(y) for y in labels} - {0, 1})
    if bad:
        raise ValueError(f"predictions follow from correctness only for labels 0/1, got label(s) {bad}")
    return [int(y) if ok else 1 - int(y) for ok, y in zip(correct, labels, strict=True)]


NEAR_CONSTANT_SHARE = 0.9  # without labels: one class on at least this share of the rows is near-constant


@dataclass(frozen=True)
class ClassShare(Record):
    """The most predicted class, its share of the ``n`` rows, and whether the model is near-constant: by
    :func:`class_balance`'s recall rule when the labels are known, else one class on ≥ ``NEAR_CONSTANT_SHARE``."""

    majority_class: int
    share: float
    n: int
    near_constant: bool


def class_share(
    predictions: Sequence[int],
    labels: Sequence[int] | None = None,
    min_recall: float = 0.1,
    threshold: float = NEAR_CONSTANT_SHARE,
) -> ClassShare:
    """The most predicted class (ties: the smaller class id) and its share of the rows; near-constant by the
    recall rule when ``labels`` are given (the report's rule), else when the share is at least ``threshold``."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not len(predictions):
        raise ValueError("no predictions")
    counts = Counter(int(p) for p in predictions)
    top = min(counts, key=lambda c: (-counts[c], c))
    share = counts[top] / len(predictions)
    if labels is not None:
        k = max(max(counts), max(int(y) for y in labels)) + 1
        near = class_balance(labels, [int(p) for p in predictions], max(k, 2), min_recall).near_constant
    else:
        near = share >= threshold
    return ClassShare(top, share, len(predictions), near)


def near_constant(predictions: Sequence[int], threshold: float = NEAR_CONSTANT_SHARE) -> bool:
    """Whether one class takes at least ``threshold`` of the predictions (the rule when labels are unknown)."""
    return class_share(predictions, threshold=threshold).near_constant
