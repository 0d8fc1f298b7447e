"""The dense model a stage starts from, chosen by params: the greedy soup by default, an ingredient by name or
the best one on validation (``soup.prune_source``), or with ``model.finetuned`` that classifier."""

from __future__ import annotations

from pathlib import Path

from robustprune.checkpoints import read_json
from robustprune.config import FINETUNED_NAME, Params
from robustprune.layout import Layout


def source_model(params: Params, layout: Layout) -> Path:
    """The dense model that gets pruned: the greedy soup by default; with ``model.finetuned`` that classifier
    (as the finetune stage materialised it under ``models/finetuned/finetuned``)."""
    if params.dense_source == "finetuned":
        return layout.finetuned / FINETUNED_NAME
    src = params.soup.prune_source
    if src == "best":
        best = max(
            params.ingredient_names(),
            key=lambda n: read_json(layout.finetuned / n / "metrics.json")["validation_accuracy"],
        )
        return layout.finetuned / best
    return layout.soup / src
