"""The shards of one (model, recipe) attack combined: the ``reports/attack.json`` row and the per-example CSV.

A shard (``tasks.attack.attack_shard``) returns ``records`` (one dict per attacked example, the fields of
:class:`~robustprune.attacks.runner.ExampleResult` and the texts), ``wall_seconds``, ``forward`` (the
victim / encoder / MLM time and the forward floor) and ``pos_tagger``. Metrics are textattack's
(:func:`robustprune.attacks.metrics.summarize`) over all records of all shards.
"""

from __future__ import annotations

import csv
import io

from robustprune.attacks.metrics import summarize
from robustprune.attacks.runner import ExampleResult

CSV_FIELDS = [
    "test_row",
    "label",
    "original_prediction",
    "perturbed_prediction",
    "outcome",
    "num_queries",
    "words_perturbed_fraction",
    "original_text",
    "perturbed_text",
]


def summary_row(model: dict, recipe: str, parts: list[dict]) -> dict:
    """One row of ``reports/attack.json``: the model's entry (name, kind, method, sparsity), textattack's
    metrics over every shard's records, and the shards' wall time against their forward floor."""
    records = [r for p in parts for r in p["records"]]
    fields = set(ExampleResult.__dataclass_fields__)
    summary = summarize([ExampleResult(**{k: v for k, v in r.items() if k in fields}) for r in records])
    wall = sum(p["wall_seconds"] for p in parts)
    floor = sum(p["forward"]["floor_seconds"] for p in parts)
    forward = {
        k: sum(p["forward"].get(k, 0) for p in parts)
        for k in (
            "victim_seconds",
            "victim_texts",
            "encoder_seconds",
            "encoder_texts",
            "encoder_requested",
            "mlm_seconds",
        )
    }
    return {
        "model": model["name"],
        "kind": model["kind"],
        "method": model["method"],
        "sparsity": model["sparsity"],
        "recipe": recipe,
        **(summary if isinstance(summary, dict) else vars(summary)),
        "wall_seconds": wall,
        "floor_seconds": floor,
        "wall_over_floor": wall / floor if floor else None,
        **forward,
        "seconds_per_example": wall / max(len(records), 1),
        # which part-of-speech check ran: the tagger's name, "wordnet-lexical" (fallback), or None (no POS)
        "pos_tagger": next((p["pos_tagger"] for p in parts if p.get("pos_tagger")), None),
    }


def records_csv(parts: list[dict]) -> str:
    """Every shard's records, in shard order, as ``reports/attacks/<model>/<recipe>.csv``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for p in parts:
        w.writerows(p["records"])
    return buf.getvalue()
