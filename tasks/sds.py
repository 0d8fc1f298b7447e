"""sds: sparse-dense-sparse on top of the prune stage's models: reactivate (one task), re-prune (another).

Reactivation restores the pruned connections of a one-shot pruned model and reconstructs every Linear
against the dense source model under a penalty on the re-activated positions
(:func:`robustprune.sds.reactivate_model`); the re-prune runs the same method and pattern on that dense
model with the engine's driver, optionally followed by a mask-fixed adjustment. Each task keeps its
result under a key over everything it depends on (first-pass model, dense model, calibration set,
options, code): ``.cache/sds-work/<name>/<key>/reactivated`` and ``models/sds/<name>`` (its
``metrics.json`` records the key), so an unchanged combination is a cache hit and a killed run loses at
most the task in flight (every directory is written atomically).
"""

from __future__ import annotations

import hashlib
import json
import time

from prefect import task
from prefect.logging import get_run_logger

from robustprune.checkpoints import atomic_dir, load_masks, read_json, save_masks, write_json
from robustprune.config import Params
from robustprune.data import load_splits
from robustprune.metrics import evaluate_accuracy
from robustprune.modeling import load_classifier, load_tokenizer, measured_sparsity, resolve_device
from robustprune.options import sds_options
from robustprune.pruning.sequential import prune_model
from robustprune.sds import adjust_model, reactivate_model
from robustprune.sources import source_model
from tasks.common import Layout, code_digest, combo_name, model_digest, sha256_files
from tasks.prune import _calib_batches, options


def sds_name(method: str, sparsity: str) -> str:
    return f"sds-{combo_name(method, sparsity)}"


def _code_digest() -> str:
    return code_digest(
        "robustprune.pruning", "robustprune.modeling", "robustprune.sds", "robustprune.sds_layer"
    )


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _test_accuracy(params: Params, layout: Layout, model, tokenizer) -> float:  # noqa: ANN001
    test = load_splits(layout.data).test
    return evaluate_accuracy(
        model,
        tokenizer,
        test["text"].tolist(),
        test["label"].tolist(),
        batch_size=params.evaluate.batch_size,
        max_length=params.data.max_length,
        device=resolve_device(params.runtime.device),
    ).accuracy


def _summary(reports) -> dict:  # noqa: ANN001 - list[SDSBlockReport]
    layers = [fit for r in reports for fit in r.layers]
    n = max(len(layers), 1)
    return {
        "mean_error_before": sum(f.error_before for f in layers) / n,
        "mean_error_after": sum(f.error_after for f in layers) / n,
        "mean_reactivated_norm_share": sum(f.reactivated for f in layers) / n,
        "mean_zero_share": sum(f.zero_share for f in layers) / n,
        "block_output_error": [r.output_error for r in reports],
    }


@task(name="sds-reactivate", tags=["gpu"])
def sds_reactivate(params: Params, layout: Layout, method: str, sparsity: str) -> dict:
    """SDS step 2 on the prune stage's model ``method@sparsity``; returns where the dense model is."""
    logger = get_run_logger()
    first = layout.pruned_model(method, sparsity)
    dense = source_model(params, layout)
    opts = sds_options(params.sds)
    key = _key(
        model_digest(first),
        model_digest(dense),
        sha256_files(layout.calibration / "calibration.safetensors"),
        repr(opts),
        params.calibrate.batch_size,
        _code_digest(),
    )
    work = layout.root / ".cache" / "sds-work" / sds_name(method, sparsity) / key
    if (work / "metrics.json").is_file():
        logger.info("cache hit: %s reactivated from the same model, data and options", first.name)
        return read_json(work / "metrics.json")
    device = resolve_device(params.runtime.device)
    model, dense_model = load_classifier(first), load_classifier(dense)
    masks = load_masks(first / "masks.safetensors", packed=True)
    t0 = time.perf_counter()
    reports = reactivate_model(
        model,
        dense_model,
        _calib_batches(params, layout),
        masks,
        opts,
        device=device,
        progress=params.runtime.progress,
    )
    seconds = time.perf_counter() - t0
    tok = load_tokenizer(first)
    metrics = {
        "source": first.name,
        "key": key,
        "reactivate_seconds": seconds,
        "reactivated_sparsity": measured_sparsity(model, params.prune.modules),
        "reactivated_accuracy": _test_accuracy(params, layout, model, tok),
        **_summary(reports),
        "dir": str(work / "reactivated"),
    }
    with atomic_dir(work / "reactivated") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    write_json(work / "metrics.json", metrics)
    return metrics


@task(name="sds-reprune", tags=["gpu"])
def sds_reprune(params: Params, layout: Layout, method: str, sparsity: str, reactivated: dict) -> dict:
    """SDS step 3: prune the reactivated model again (same method and pattern), optionally adjust; save."""
    logger = get_run_logger()
    out = layout.sds / sds_name(method, sparsity)
    opts = options(params, method, sparsity)
    sopts = sds_options(params.sds)
    key = _key(reactivated["key"], repr(opts), repr(sopts), _code_digest())
    if (out / "metrics.json").is_file() and read_json(out / "metrics.json").get("key") == key:
        logger.info("cache hit: %s already re-pruned", out.name)
        return read_json(out / "metrics.json")
    device = resolve_device(params.runtime.device)
    model = load_classifier(reactivated["dir"])
    batches = _calib_batches(params, layout)
    t0 = time.perf_counter()
    outcome = prune_model(model, batches, opts, device=device, progress=params.runtime.progress)
    prune_seconds = time.perf_counter() - t0
    adjust_seconds = 0.0
    if sopts.final_adjust_steps:
        t1 = time.perf_counter()
        adjust_model(
            model, load_classifier(source_model(params, layout)), batches, outcome.masks, sopts, device=device
        )
        adjust_seconds = time.perf_counter() - t1
    metrics = {
        "name": out.name,
        "source": reactivated["source"],
        "key": key,
        "method": method,
        "sparsity_target": sparsity,
        "measured_sparsity": measured_sparsity(model, params.prune.modules),
        "reactivated_accuracy": reactivated["reactivated_accuracy"],
        "reactivate_seconds": reactivated["reactivate_seconds"],
        "prune_seconds": prune_seconds,
        "adjust_seconds": adjust_seconds,
        "seconds": reactivated["reactivate_seconds"] + prune_seconds + adjust_seconds,
        "reactivation": {k: v for k, v in reactivated.items() if k.startswith("mean_")},
        "blocks": [
            {"index": b.index, "output_error": b.output_error, "alpha": b.alpha} for b in outcome.blocks
        ],
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(reactivated["dir"]).save_pretrained(tmp)
        save_masks(tmp / "masks.safetensors", outcome.masks)
        write_json(tmp / "metrics.json", metrics)
    return metrics
