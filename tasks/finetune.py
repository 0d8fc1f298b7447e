"""finetune: one task per soup ingredient (mapped), each saved as a Hugging Face directory.

Plain and FreeLB variants train with :func:`robustprune.finetune.finetune`; ``augment`` variants add each epoch's
perturbed copies from the attack resources (:mod:`robustprune.augment`), ``a2t`` variants train through
textattack's Trainer with A2T's attack (:mod:`robustprune.a2t`). Both read ``models/attack`` (the
attack_resources stage runs first in flows/pipeline.py); every ingredient comes out in the same format (same
architecture, same seeded head init), with its train seconds and seconds per step.
"""

from __future__ import annotations

import hashlib
import json
import time

from prefect import task
from prefect.logging import get_run_logger

from robustprune.adversarial import FreeLBSettings
from robustprune.checkpoints import read_json, save_pretrained_atomic
from robustprune.config import Params, Variant
from robustprune.data import load_splits
from robustprune.finetune import FinetuneSettings, finetune
from robustprune.metrics import evaluate_accuracy
from robustprune.modeling import load_classifier, load_tokenizer, resolve_device
from tasks.attack_resources import attack_dir
from tasks.common import Layout, code_digest, model_digest, sha256_files


def finetune_settings(params: Params, variant: Variant) -> FinetuneSettings:
    """The library settings of one ingredient: the variant's own recipe over the finetune section's."""
    f, adv = params.finetune, variant.adversarial
    return FinetuneSettings(
        learning_rate=variant.learning_rate,
        epochs=variant.epochs,
        seed=variant.seed,
        batch_size=f.batch_size,
        weight_decay=f.weight_decay if variant.weight_decay is None else variant.weight_decay,
        warmup_ratio=f.warmup_ratio,
        max_length=params.data.max_length,
        optimizer=variant.optimizer,
        momentum=variant.momentum,
        adversarial=FreeLBSettings(**adv.model_dump()) if adv is not None else None,
    )


def augment_settings(variant: Variant):  # noqa: ANN201 - AugmentSettings (imports textattack: lazily)
    """The library settings of a variant's input-space augmentation (``variant.augment``)."""
    from robustprune.augment import AugmentSettings

    a = variant.augment
    assert a is not None
    return AugmentSettings(
        copies=a.copies,
        fraction=a.fraction,
        mix=a.mix.model_dump(),
        neighbours=a.neighbours,
        min_cos_sim=a.min_cos_sim,
        mlm_candidates=a.mlm_candidates,
        seed=a.seed,
    )


def a2t_settings(variant: Variant):  # noqa: ANN201 - A2TSettings (imports textattack: lazily)
    """The library settings of a variant's attack-in-the-loop training (``variant.a2t``)."""
    from robustprune.a2t import A2TSettings

    assert variant.a2t is not None
    return A2TSettings(**variant.a2t.model_dump())


def variant_key(params: Params, layout: Layout, variant: Variant) -> str:
    """What an ingredient depends on: its recipe, the shared settings, the data, the base model, the code;
    for augment and a2t variants also the attack resources and the attack code they draw from."""
    f = params.finetune
    recipe = [variant.model_dump(mode="json"), f.batch_size, f.head_seed, f.weight_decay, f.warmup_ratio]
    h = hashlib.sha256(json.dumps([recipe, params.data.max_length], sort_keys=True).encode())
    h.update(sha256_files(layout.data / "train.parquet", layout.data / "validation.parquet").encode())
    h.update(model_digest(layout.base_model).encode())
    h.update(code_digest("robustprune.finetune", "robustprune.adversarial", "tasks.finetune").encode())
    if variant.uses_attack_resources():
        d = attack_dir(layout)
        h.update(sha256_files(*(d / n for n in ("vectors.npz", "info.json", "pos.json"))).encode())
        h.update(code_digest("robustprune.augment", "robustprune.a2t", "robustprune.attacks").encode())
    return h.hexdigest()[:24]


def _train(params: Params, layout: Layout, variant: Variant, model, tok, splits, settings) -> tuple:  # noqa: ANN001
    """Train one ingredient in place the way its variant says; (FinetuneResult, extra metrics)."""
    device = resolve_device(params.runtime.device)
    texts, labels = splits.train["text"].tolist(), splits.train["label"].tolist()
    common = {"device": device, "progress": params.runtime.progress, "desc": f"finetune {variant.name}"}
    if not variant.uses_attack_resources():
        return finetune(model, tok, texts, labels, settings, **common), {}
    from robustprune.attacks.bundle import load_bundle
    from robustprune.attacks.tagger import load_tagger_or_none

    res = load_bundle(attack_dir(layout))
    tagger = load_tagger_or_none(res.tagger_dir)
    if variant.a2t is not None:
        from robustprune.a2t import a2t_finetune
        from robustprune.attacks.similarity import MeanPooledEncoder

        model.to(device)
        result = a2t_finetune(
            model,
            tok,
            texts,
            labels,
            settings,
            a2t_settings(variant),
            res,
            eval_texts=splits.validation["text"].tolist(),
            eval_labels=splits.validation["label"].tolist(),
            tagger=tagger,
            encoder=MeanPooledEncoder.from_dir(res.encoder_dir),
        )
        return result, {"a2t_stats": {"epochs": result.epochs, "attack_seconds": result.attack_seconds}}
    from robustprune.attacks.bert_attack import load_mlm
    from robustprune.augment import Augmenter

    aug_settings = augment_settings(variant)
    masked_lm = load_mlm(res.mlm_dir) if aug_settings.mix.get("mlm", 0) > 0 and res.mlm_dir else None
    augmenter = Augmenter(res, aug_settings, tagger=tagger, masked_lm=masked_lm)
    result = finetune(model, tok, texts, labels, settings, augmenter=augmenter.bind(texts), **common)
    return result, {"augment_stats": augmenter.stats.as_dict()}


@task(name="finetune-variant", tags=["gpu"], retries=1)
def finetune_variant(params: Params, layout: Layout, variant: Variant) -> dict:
    """Fine-tune the base encoder with one variant's settings; write models/finetuned/<name>/.

    An ingredient whose saved ``metrics.json`` carries the same key (recipe, data, base model, code) is not
    trained again: changing or adding one variant retrains only that one.
    """
    key = variant_key(params, layout, variant)
    saved = layout.finetuned / variant.name / "metrics.json"
    if saved.is_file() and (layout.finetuned / variant.name / "model.safetensors").is_file():
        metrics = read_json(saved)
        if metrics.get("cache_key") == key:
            get_run_logger().info("cache hit: ingredient %r is up to date (key %s)", variant.name, key)
            return metrics
    splits = load_splits(layout.data)
    device = resolve_device(params.runtime.device)
    tok = load_tokenizer(layout.base_model)
    model = load_classifier(
        layout.base_model, num_labels=len(splits.label_names), head_seed=params.finetune.head_seed
    )
    model.config.id2label = dict(enumerate(splits.label_names))
    model.config.label2id = {n: i for i, n in enumerate(splits.label_names)}
    settings = finetune_settings(params, variant)
    t0 = time.perf_counter()
    result, extra = _train(params, layout, variant, model, tok, splits, settings)
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
        "seconds_per_step": train_s / max(result.steps, 1),
        **variant.model_dump(),
        **extra,
        "cache_key": key,
    }
    save_pretrained_atomic(
        model.cpu(),
        tok,
        layout.finetuned / variant.name,
        extra={"metrics.json": metrics, "losses.json": result.losses},
    )
    return metrics
