"""textattack's attack metrics as robustprune.attacks.metrics computes them: the edges that decide a rate."""

from __future__ import annotations

import math

import pytest

from robustprune.attacks.metrics import summarize
from robustprune.attacks.runner import ExampleResult


def _r(outcome: str, frac: float = 0.0, seconds: float = 1.0, queries: int = 1) -> ExampleResult:
    return ExampleResult(0, "t", "t", 1, 1, 0, outcome, queries, frac, seconds, None)


def test_success_rate_with_as_many_successes_as_failures():
    """succeeded / (succeeded + failed): one of each is 1/2, not the "no attacked example" 0."""
    s = summarize([_r("succeeded", 0.5), _r("failed")])
    assert s.attack_success_rate == pytest.approx(0.5) and s.accuracy_under_attack == pytest.approx(0.5)


def test_words_perturbed_averages_positive_fractions_of_successes_only():
    """textattack's WordsPerturbed records 0 for non-successes and averages the positive entries: a success
    with no word changed does not pull the mean down."""
    s = summarize([_r("succeeded", 0.0), _r("succeeded", 0.4), _r("failed", 0.9)])
    assert s.avg_words_perturbed == pytest.approx(0.4)
    assert math.isnan(summarize([_r("succeeded", 0.0)]).avg_words_perturbed)


def test_average_seconds_over_every_attacked_example():
    s = summarize([_r("succeeded", 0.2, seconds=1.0), _r("failed", seconds=2.0), _r("skipped", seconds=6.0)])
    assert s.avg_seconds == pytest.approx(3.0)
    assert s.avg_queries == pytest.approx(1.0)  # skipped examples are left out of the query mean
