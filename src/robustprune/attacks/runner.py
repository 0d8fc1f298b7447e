"""Run a textattack ``Attack`` example by example and record one :class:`ExampleResult` each.

``attack.attack(text, label)`` is called per example, so results come back in input order with the
example's own wall time.  Outcomes are textattack's: "succeeded" (the prediction left the true
label within the constraints), "failed" (it did not), "skipped" (the model already misclassifies
the clean text; ``reason="misclassified"``).  Inputs without any word (empty, whitespace-only or
punctuation-only texts: nothing to perturb) are not attacked and are "skipped" with
``reason="no words"``; :func:`robustprune.attacks.metrics.summarize` leaves them out of every
rate.  Texts longer than the wrapper's ``max_length`` are truncated by the wrapper exactly as the
classifier truncates them at evaluation time: words beyond the limit do not reach the model, get
zero importance and are never usefully perturbed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

from robustprune.attacks.textattack_env import import_textattack
from robustprune.interrupt import raise_if_stopped
from robustprune.records import Record

OUTCOMES = ("succeeded", "failed", "skipped")
NO_WORDS = "no words"
MISCLASSIFIED = "misclassified"


@dataclass(frozen=True)
class ExampleResult(Record):
    """The attack on one example.

    ``words_perturbed_fraction``: words of the original text changed in the final text over the
    original's word count (textattack's ``all_words_diff``; 0 for skipped examples).
    ``num_queries``: textattack's count of model queries for this example (cache hits included).
    ``reason``: why an example was skipped (``None`` otherwise).
    """

    index: int
    original_text: str
    perturbed_text: str
    label: int
    original_prediction: int | None
    perturbed_prediction: int | None
    outcome: str
    num_queries: int
    words_perturbed_fraction: float
    seconds: float
    reason: str | None = None


def check_labels(
    model_config_num_labels: int | None, labels: Iterable[int], *, num_data_labels: int | None = None
) -> None:
    """Raise ValueError unless the model's label count fits the data.

    ``labels``: the examples' integer labels; ``num_data_labels``: the data set's label count when
    known (``len(Splits.label_names)``).  A classifier with a different number of outputs than the
    data has classes would be attacked against meaningless "true" labels.
    """
    if model_config_num_labels is None:
        raise ValueError("the model has no num_labels in its config: not a sequence classifier?")
    if num_data_labels is not None and num_data_labels != model_config_num_labels:
        raise ValueError(
            f"the model predicts {model_config_num_labels} labels but the data has {num_data_labels}: "
            "attack a classifier fine-tuned on this data set"
        )
    bad = sorted({int(y) for y in labels if not 0 <= int(y) < model_config_num_labels})
    if bad:
        raise ValueError(
            f"labels {bad[:10]} are outside the model's 0..{model_config_num_labels - 1} "
            f"(model config num_labels = {model_config_num_labels})"
        )


def _model_num_labels(attack) -> int | None:
    """``num_labels`` of the attacked model's config, if the wrapper exposes one."""
    wrapper = attack.goal_function.model
    config = getattr(getattr(wrapper, "model", None), "config", None)
    return getattr(config, "num_labels", None)


def _skipped_no_words(index: int, text: str, label: int) -> ExampleResult:
    """The record of an input with no word to attack."""
    return ExampleResult(index, text, text, label, None, None, "skipped", 0, 0.0, 0.0, NO_WORDS)


def _record(index: int, text: str, label: int, result, seconds: float) -> ExampleResult:
    """Convert a textattack ``AttackResult`` into an :class:`ExampleResult`."""
    ta = import_textattack()
    kinds = ta.attack_results
    original = result.original_result
    perturbed = result.perturbed_result
    if isinstance(result, kinds.SuccessfulAttackResult):
        outcome, reason = "succeeded", None
    elif isinstance(result, kinds.FailedAttackResult):
        outcome, reason = "failed", None
    elif isinstance(result, kinds.SkippedAttackResult):
        outcome, reason = "skipped", MISCLASSIFIED
    else:
        raise TypeError(f"unexpected attack result {type(result).__name__} (untargeted classification only)")
    words = original.attacked_text.words
    changed = len(original.attacked_text.all_words_diff(perturbed.attacked_text))
    fraction = changed / len(words) if words and outcome != "skipped" else 0.0
    return ExampleResult(
        index=index,
        original_text=text,
        perturbed_text=perturbed.attacked_text.text,
        label=label,
        original_prediction=int(original.output),
        perturbed_prediction=int(perturbed.output),
        outcome=outcome,
        num_queries=int(result.num_queries),
        words_perturbed_fraction=fraction,
        seconds=seconds,
        reason=reason,
    )


def forward_floor(attack) -> dict[str, float]:
    """Seconds and texts of every model forward the attack made so far: its "forward floor".

    Victim (the wrapper's ``stats``), sentence encoders (each distinct encoder once, however many
    constraints share it; ``encoder_requested`` counts sentences asked for, cache hits included)
    and the transformation's own model (BERT-Attack's masked LM).  ``floor_seconds`` is their sum:
    the wall time an attack would take if everything but tokenizing and running models were free.
    ``victim_requested`` counts the texts the victim was asked for (its logit cache's hits included);
    ``tagger_seconds`` / ``tagger_texts``: TextFooler's part-of-speech tagger (not in the floor).
    """
    empty = SimpleNamespace(seconds=0.0, texts=0)
    victim = getattr(attack.goal_function.model, "stats", empty)
    encoders = {
        id(c.model): c.model for c in attack.constraints if hasattr(getattr(c, "model", None), "stats")
    }
    taggers = {
        id(c.tagger): c.tagger for c in attack.constraints if hasattr(getattr(c, "tagger", None), "stats")
    }
    mlm = getattr(attack.transformation, "stats", empty)
    out = {
        "victim_seconds": victim.seconds,
        "victim_texts": victim.texts,
        "victim_requested": getattr(attack.goal_function.model, "requested", victim.texts),
        "tagger_seconds": sum(t.stats.seconds for t in taggers.values()),
        "tagger_texts": sum(t.stats.tagged for t in taggers.values()),
        "encoder_seconds": sum(e.stats.seconds for e in encoders.values()),
        "encoder_texts": sum(e.stats.texts for e in encoders.values()),
        "encoder_requested": sum(getattr(e, "requested", e.stats.texts) for e in encoders.values()),
        "mlm_seconds": mlm.seconds,
        "mlm_texts": mlm.texts,
    }
    out["floor_seconds"] = out["victim_seconds"] + out["encoder_seconds"] + out["mlm_seconds"]
    return out


def reset_forward_stats(attack) -> None:
    """Zero the forward counters :func:`forward_floor` reads (encoder caches are kept)."""
    holders = [
        attack.goal_function.model,
        attack.transformation,
        *(getattr(c, "model", None) for c in attack.constraints),
        *(getattr(c, "tagger", None) for c in attack.constraints),
    ]
    for holder in holders:
        stats = getattr(holder, "stats", None)
        if stats is not None:
            stats.reset()
        if hasattr(holder, "requested"):
            holder.requested = 0


def attack_examples(
    attack,
    examples: Sequence[tuple[str, int]],
    *,
    query_budget: int | None = None,
    progress: bool = False,
    num_data_labels: int | None = None,
) -> list[ExampleResult]:
    """Attack each ``(text, label)`` in order; one :class:`ExampleResult` per example.

    ``query_budget`` caps textattack's model queries per example (``None``: unlimited).  When the
    wrapped model has a config, its ``num_labels`` is checked against the labels (and
    ``num_data_labels``) before anything is attacked (:func:`check_labels`).
    """
    words_from_text = import_textattack().shared.utils.words_from_text
    labels = [int(label) for _, label in examples]
    num_labels = _model_num_labels(attack)
    if num_labels is not None:  # a wrapper without a model config cannot be checked
        check_labels(num_labels, labels, num_data_labels=num_data_labels)
    goal = attack.goal_function
    previous_budget = goal.query_budget
    goal.query_budget = float("inf") if query_budget is None else query_budget
    rows = enumerate(zip((text for text, _ in examples), labels, strict=True))
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, total=len(examples), desc="attack", unit="ex")
    out = []
    try:
        for index, (text, label) in rows:
            raise_if_stopped()  # SIGTERM / SIGINT: a shard runs in a worker thread; stop between examples
            if not isinstance(text, str) or not words_from_text(text):
                out.append(_skipped_no_words(index, "" if text is None else str(text), label))
                continue
            t0 = time.perf_counter()
            result = attack.attack(text, label)
            out.append(_record(index, text, label, result, time.perf_counter() - t0))
    finally:
        goal.query_budget = previous_budget
    return out
