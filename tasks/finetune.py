"""finetune: one task per soup ingredient (mapped), each saved as a Hugging Face directory."""

from __future__ import annotations

import time

from prefect import task

from robustprune.checkpoints import save_pretrained_atomic
from robustprune.config import Params, Variant
from robustprune.data import load_splits
from robustprune.finetune import FinetuneSettings, finetune
from robustprune.metrics import evaluate_accuracy
from robustprune.modeling import load_classifier, load_tokenizer, resolve_device
from tasks.common import Layout


@task(name="finetune-variant", tags=["gpu"], retries=1)
def finetune_variant(params: Params, layout: Layout, variant: Variant) -> dict:
    """Fine-tune the base encoder with one variant's settings; write models/finetuned/<name>/."""
    splits = load_splits(layout.data)
    device = resolve_device(params.runtime.device)
    tok = load_tokenizer(layout.base_model)
    model = load_classifier(
        layout.base_model, num_labels=len(splits.label_names), head_seed=params.finetune.head_seed
    )
    model.config.id2label = dict(enumerate(splits.label_names))
    model.config.label2id = {n: i for i, n in enumerate(splits.label_names)}
    f = params.finetune
    settings = FinetuneSettings(
        learning_rate=variant.learning_rate,
        epochs=variant.epochs,
        seed=variant.seed,
        batch_size=f.batch_size,
        weight_decay=f.weight_decay,
        warmup_ratio=f.warmup_ratio,
        max_length=params.data.max_length,
    )
    t0 = time.perf_counter()
    result = finetune(
        model,
        tok,
        splits.train["text"].tolist(),
        splits.train["label"].tolist(),
        settings,
        device=device,
        progress=params.runtime.progress,
        desc=f"finetune {variant.name}",
    )
    train_s = time.perf_counter() - t0
    ev = {"batch_size": params.evaluate.batch_size, "max_length": params.data.max_length, "device": device}
    val = evaluate_accuracy(
        model, tok, splits.validation["text"].tolist(), splits.validation["label"].tolist(), **ev
    )
    test = evaluate_accuracy(model, tok, splits.test["text"].tolist(), splits.test["label"].tolist(), **ev)
    metrics = {
        "validation_accuracy": val.accuracy,
        "test_accuracy": test.accuracy,
        "final_loss": result.final_loss,
        "steps": result.steps,
        "train_seconds": train_s,
        **variant.model_dump(),
    }
    save_pretrained_atomic(
        model.cpu(),
        tok,
        layout.finetuned / variant.name,
        extra={"metrics.json": metrics, "losses.json": result.losses},
    )
    return metrics
