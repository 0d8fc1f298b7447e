"""Attack metrics with textattack's definitions (``textattack.metrics.attack_metrics``, 0.3.11).

Over the N attacked examples (inputs skipped for having no words are left out: textattack cannot
take them at all):

* original accuracy = (N - skipped) / N (``AttackSuccessRate.original_accuracy_perc``; an example
  is skipped when the clean text is already misclassified);
* accuracy under attack = failed / N (``attack_accuracy_perc``);
* attack success rate = succeeded / (succeeded + failed), 0 when there is no attacked example
  (``attack_success_rate_perc``);
* average queries = mean ``num_queries`` over non-skipped examples (``AttackQueries``);
* average words perturbed = mean fraction of words changed over the succeeded examples with a
  positive fraction (``WordsPerturbed.avg_perturbation_perc``: it records 0 for failed and
  skipped results and then averages the positive entries).

Rates are fractions in [0, 1] (textattack prints percentages rounded to 2 decimals); an average
over no example is NaN (textattack's ``np.mean`` of an empty array).  Nothing here imports
textattack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from robustprune.attacks.runner import NO_WORDS, OUTCOMES, ExampleResult
from robustprune.records import Record


@dataclass(frozen=True)
class AttackSummary(Record):
    """Counts and textattack's aggregate metrics of one attack run (rates as fractions)."""

    num_examples: int
    num_succeeded: int
    num_failed: int
    num_skipped: int
    num_no_words: int
    original_accuracy: float
    accuracy_under_attack: float
    attack_success_rate: float
    avg_queries: float
    avg_words_perturbed: float
    avg_seconds: float


def _mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no value."""
    return sum(values) / len(values) if values else math.nan


def summarize(results: Sequence[ExampleResult]) -> AttackSummary:
    """Aggregate per-example results exactly as textattack's attack metrics do (see module doc)."""
    attacked = [r for r in results if r.reason != NO_WORDS]
    unknown = sorted({r.outcome for r in attacked} - set(OUTCOMES))
    if unknown:
        raise ValueError(f"unknown outcomes {unknown}; expected one of {list(OUTCOMES)}")
    n = len(attacked)
    succeeded = sum(r.outcome == "succeeded" for r in attacked)
    failed = sum(r.outcome == "failed" for r in attacked)
    skipped = n - succeeded - failed
    return AttackSummary(
        num_examples=n,
        num_succeeded=succeeded,
        num_failed=failed,
        num_skipped=skipped,
        num_no_words=len(results) - n,
        original_accuracy=(n - skipped) / n if n else math.nan,
        accuracy_under_attack=failed / n if n else math.nan,
        attack_success_rate=succeeded / (succeeded + failed) if succeeded + failed else 0.0,
        avg_queries=_mean([r.num_queries for r in attacked if r.outcome != "skipped"]),
        avg_words_perturbed=_mean(
            [
                r.words_perturbed_fraction
                for r in attacked
                if r.outcome == "succeeded" and r.words_perturbed_fraction > 0
            ]
        ),
        avg_seconds=_mean([r.seconds for r in attacked]),
    )
