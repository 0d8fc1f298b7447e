"""Checkpoints you already have: ``model.finetuned`` (pruned as it is) or ``soup.ingredients`` (souped).

The finetune stage runs :func:`given_checkpoint` for each instead of fine-tuning ``finetune.variants``: nothing
is trained, the checkpoint is checked against the data, given the data's label mapping, scored and copied to
``models/finetuned/<name>/`` where the soup and prune stages expect their inputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from robustprune.checkpoints import read_json, save_pretrained_atomic
from robustprune.config import FINETUNED_NAME, Params
from robustprune.data import load_splits
from robustprune.metrics import evaluate_accuracy
from robustprune.modeling import load_classifier, load_tokenizer, resolve_device
from robustprune.own_model import CheckpointError, classifier_problems, set_label_names
from tasks.common import Layout, code_digest, sha256_files


def given_entries(params: Params) -> list[tuple[str, str]]:
    """(name, source) of every given checkpoint: ``finetuned`` for model.finetuned, else the ingredients."""
    if params.dense_source == "finetuned":
        return [(FINETUNED_NAME, str(params.model.finetuned))]
    return params.soup.ingredient_entries


def given_key(params: Params, layout: Layout, source: str) -> str:
    """What a given checkpoint's copy depends on: its files (or hub name), the data, the settings, the code."""
    h = hashlib.sha256(json.dumps([source, params.data.max_length, params.evaluate.batch_size]).encode())
    src = Path(source).expanduser()
    if src.is_dir():
        files = sorted(f for f in src.iterdir() if f.is_file() and not f.name.startswith("."))
        h.update(sha256_files(*files).encode())
    splits = [layout.data / f for f in ("validation.parquet", "test.parquet", "labels.json")]
    h.update(sha256_files(*splits).encode())
    h.update(code_digest("robustprune.own_model", "robustprune.metrics", "tasks.given").encode())
    return h.hexdigest()[:24]


@task(name="finetune-given", tags=["cpu"])
def given_checkpoint(params: Params, layout: Layout, name: str, source: str) -> dict:
    """A classifier fine-tuned elsewhere, nothing trained: checked against the data (a sequence classifier
    with the data's labels: :mod:`robustprune.own_model`), given the data's label mapping, scored on the
    validation and test splits and saved as ``models/finetuned/<name>/`` with its ``metrics.json``
    (``source``: where it came from). Cached by the source's content."""
    key = given_key(params, layout, source)
    dest = layout.finetuned / name
    if (dest / "metrics.json").is_file() and (dest / "model.safetensors").is_file():
        metrics = read_json(dest / "metrics.json")
        if metrics.get("cache_key") == key:
            get_run_logger().info("cache hit: %s is %s, unchanged (key %s)", name, source, key)
            return metrics
    splits = load_splits(layout.data)
    where = f"{'model.finetuned' if name == FINETUNED_NAME else 'soup.ingredients'} = {source!r}"
    model, tok = load_classifier(source), load_tokenizer(source)
    problems = classifier_problems(model.config.to_dict(), splits.label_names, where)
    if problems:
        raise CheckpointError(problems[0])
    set_label_names(model, splits.label_names)
    device = resolve_device(params.runtime.device)
    ev = {"batch_size": params.evaluate.batch_size, "max_length": params.data.max_length, "device": device}
    val = evaluate_accuracy(
        model, tok, splits.validation["text"].tolist(), splits.validation["label"].tolist(), **ev
    )
    test = evaluate_accuracy(model, tok, splits.test["text"].tolist(), splits.test["label"].tolist(), **ev)
    metrics = {
        "name": name,
        "source": source,
        "given": True,
        "validation_accuracy": val.accuracy,
        "test_accuracy": test.accuracy,
        "label_names": list(splits.label_names),
        "cache_key": key,
    }
    save_pretrained_atomic(model.cpu(), tok, dest, extra={"metrics.json": metrics})
    return metrics
