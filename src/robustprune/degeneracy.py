"""Is a classifier (near-)constant? The share of test rows that fall on its most predicted class.

A model that predicts one class on (almost) every row scores that class's share of the test set — 57.8% on
the default test rows — and a paired comparison against it measures the collapse, not the thing compared.
Every report that reads a comparison as "what X adds" checks the baseline with :func:`near_constant` first.
Predictions come from the model itself; when only per-example correctness and the labels are kept, a
binary task's predictions follow from them (:func:`predictions_from_correct`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

NEAR_CONSTANT_SHARE = 0.9  # one class on at least this share of the rows: not a baseline


@dataclass(frozen=True)
class ClassShare:
    """The most predicted class, its share of the ``n`` rows, and whether that makes the model near-constant."""

    majority_class: int
    share: float
    n: int
    near_constant: bool

    def to_dict(self) -> dict:
        return asdict(self)


def predictions_from_correct(correct: Sequence[int | bool], labels: Sequence[int]) -> list[int]:
    """A binary classifier's predictions from its per-row correctness and the labels (0/1): the label when
    correct, the other class when not. Refuses labels outside {0, 1}: with more classes a wrong row does not
    say which class was predicted."""
    if len(correct) != len(labels):
        raise ValueError(f"{len(correct)} correctness flags but {len(labels)} labels")
    bad = sorted({int(y) for y in labels} - {0, 1})
    if bad:
        raise ValueError(f"predictions follow from correctness only for labels 0/1, got label(s) {bad}")
    return [int(y) if ok else 1 - int(y) for ok, y in zip(correct, labels, strict=True)]


def class_share(predictions: Sequence[int], threshold: float = NEAR_CONSTANT_SHARE) -> ClassShare:
    """The most predicted class (ties: the smaller class id) and its share; near-constant when the share is
    at least ``threshold``."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not len(predictions):
        raise ValueError("no predictions")
    counts = Counter(int(p) for p in predictions)
    top = min(counts, key=lambda c: (-counts[c], c))
    share = counts[top] / len(predictions)
    return ClassShare(top, share, len(predictions), share >= threshold)


def near_constant(predictions: Sequence[int], threshold: float = NEAR_CONSTANT_SHARE) -> bool:
    """Whether one class takes at least ``threshold`` of the predictions."""
    return class_share(predictions, threshold).near_constant
