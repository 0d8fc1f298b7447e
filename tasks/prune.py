"""prune: one branch per (method, sparsity); one task per transformer block, resumable after a crash.

A branch's state lives in .cache/prune-work/<combo>/<key>/, where the key hashes everything the result
depends on (source model, calibration set, solver options). After block l finishes, the inputs of block
l+1 (both streams), block l's pruned weights and masks, and last a ``block_l.json`` marker are written
atomically. A run killed at any point and started again skips every block that has a marker and
continues from bit-identical saved inputs, so it ends with the same masks as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from prefect import task
from prefect.logging import get_run_logger

from robustprune.calibration import batches
from robustprune.checkpoints import (
    atomic_dir,
    load_masks,
    load_tensors,
    read_json,
    save_masks,
    save_tensors,
    write_json,
)
from robustprune.config import Params
from robustprune.modeling import (
    find_blocks,
    linear_groups,
    load_classifier,
    load_tokenizer,
    measured_sparsity,
    resolve_device,
)
from robustprune.options import prune_options
from robustprune.pruning.sequential import BlockInputs, PruneOptions, capture_block_inputs, prune_block
from tasks.common import Layout, combo_name, model_digest, sha256_files


def source_model(params: Params, layout: Layout) -> Path:
    """The dense model that gets pruned: the greedy soup by default."""
    src = params.soup.prune_source
    if src == "best":
        best = max(
            params.finetune.variants,
            key=lambda v: read_json(layout.finetuned / v.name / "metrics.json")["validation_accuracy"],
        )
        return layout.finetuned / best.name
    return layout.soup / src


def options(params: Params, method: str, sparsity: str) -> PruneOptions:
    return prune_options(params.prune, method, sparsity)


def _calib_batches(params: Params, layout: Layout) -> list[dict[str, torch.Tensor]]:
    calib = load_tensors(layout.calibration / "calibration.safetensors")
    return batches(calib, params.calibrate.batch_size)


@task(name="prune-setup", tags=["cpu"])
def prune_setup(params: Params, layout: Layout, method: str, sparsity: str) -> dict:
    """Create (or find, to resume) the branch's work dir and capture block 0's inputs."""
    logger = get_run_logger()
    src = source_model(params, layout)
    opts = options(params, method, sparsity)
    key_src = json.dumps(
        {
            "model": model_digest(src),
            "calib": sha256_files(layout.calibration / "calibration.safetensors"),
            "opts": repr(opts),
            "batch": params.calibrate.batch_size,
            "code": _code_digest(),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    work = layout.prune_work / combo_name(method, sparsity) / key
    final = layout.pruned_model(method, sparsity) / "metrics.json"
    if final.exists() and read_json(final).get("key") == key:
        logger.info(
            "cache hit: %s already pruned from the same model, data, options and code", final.parent.name
        )
        return {"cached": True, "metrics": read_json(final), "work": str(work)}
    model = load_classifier(src)
    num_blocks = len(find_blocks(model))
    done = sorted(work.glob("block_*.json"))
    if done:
        logger.info(
            "resuming %s at %s: %d of %d blocks already pruned",
            combo_name(method, sparsity),
            work,
            len(done),
            num_blocks,
        )
    elif not (work / "inputs_000.safetensors").exists():
        device = resolve_device(params.runtime.device)
        inputs = capture_block_inputs(model, _calib_batches(params, layout), device)
        _save_inputs(work / "inputs_000.safetensors", inputs)
    # older keys of the same branch are stale (other inputs or options): drop them
    for stale in work.parent.glob("*"):
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)
    return {"work": str(work), "num_blocks": num_blocks, "source": str(src), "resumed_blocks": len(done)}


def _code_digest() -> str:
    """Hash of the code a pruned model depends on, so that a solver change invalidates cached results."""
    import robustprune.modeling
    import robustprune.pruning

    files = sorted(Path(robustprune.pruning.__file__).parent.glob("*.py"))
    return sha256_files(*files, Path(robustprune.modeling.__file__), Path(__file__))


def _save_inputs(path: Path, inputs: BlockInputs) -> None:
    tensors = {f"pruned.{i}": p.cpu() for i, p in enumerate(inputs.pruned)}
    for i, d in enumerate(inputs.dense):  # empty when the dense stream is not tracked
        # block 0's two streams are one tensor; safetensors refuses shared storage, so copy it
        tensors[f"dense.{i}"] = d.cpu().clone() if d.data_ptr() == inputs.pruned[i].data_ptr() else d.cpu()
    save_tensors(path, tensors)


def _load_inputs(path: Path, template: BlockInputs, device: torch.device) -> BlockInputs:
    t = load_tensors(path, device=str(device))
    n = len(template.extras)
    dense = [t[f"dense.{i}"] for i in range(n)] if "dense.0" in t else []
    return BlockInputs(
        pruned=[t[f"pruned.{i}"] for i in range(n)],
        dense=dense,
        extras=template.extras,
        token_mask=template.token_mask,
    )


def _apply_done_blocks(model: torch.nn.Module, work: Path, upto: int) -> None:
    blocks = find_blocks(model)
    for i in range(upto):
        weights = load_tensors(work / f"block_{i:03d}.safetensors")
        block = blocks[i]
        for group in linear_groups(model, block):
            for name, lin in group.items():
                if name in weights:
                    lin.weight.data.copy_(weights[name])


@task(name="prune-block", tags=["gpu"], retries=1)
def prune_block_task(
    params: Params, layout: Layout, method: str, sparsity: str, work: str, index: int
) -> dict:
    """Prune block ``index`` of one branch; a no-op returning the saved report if it already finished."""
    work_p = Path(work)
    marker = work_p / f"block_{index:03d}.json"
    if marker.exists():
        get_run_logger().info("block %d already pruned (resumed from %s)", index, marker)
        return read_json(marker)
    device = resolve_device(params.runtime.device)
    model = load_classifier(source_model(params, layout))
    _apply_done_blocks(model, work_p, index)
    template = capture_block_inputs(model, _calib_batches(params, layout), device)
    inputs = _load_inputs(work_p / f"inputs_{index:03d}.safetensors", template, device)
    opts = options(params, method, sparsity)
    nxt, masks, report = prune_block(model, index, inputs, opts)
    block = find_blocks(model)[index]
    weights = {
        name: lin.weight.data.cpu()
        for g in linear_groups(model, block, opts.modules)
        for name, lin in g.items()
    }
    _save_inputs(work_p / f"inputs_{index + 1:03d}.safetensors", nxt)
    save_tensors(work_p / f"block_{index:03d}.safetensors", weights)
    save_masks(work_p / f"masks_{index:03d}.safetensors", masks)
    rep = {
        "index": index,
        "seconds": report.seconds,
        "output_error": report.output_error,
        "alpha": report.alpha,
        "alpha_errors": {str(k): v for k, v in report.alpha_errors.items()},
        "layers": [vars(layer) for layer in report.layers],
    }
    write_json(marker, rep)
    (work_p / f"inputs_{index:03d}.safetensors").unlink(missing_ok=True)
    return rep


@task(name="prune-finalize", tags=["cpu"])
def prune_finalize(
    params: Params, layout: Layout, method: str, sparsity: str, work: str, started: float
) -> dict:
    """Assemble the pruned model from the finished blocks and save it as a Hugging Face directory."""
    work_p = Path(work)
    src = source_model(params, layout)
    model = load_classifier(src)
    n = len(find_blocks(model))
    _apply_done_blocks(model, work_p, n)
    masks = {}
    reports = [read_json(work_p / f"block_{i:03d}.json") for i in range(n)]
    for i in range(n):
        masks.update(load_masks(work_p / f"masks_{i:03d}.safetensors"))
    layers = [{"block": r["index"], **layer} for r in reports for layer in r["layers"]]
    metrics = {
        "method": method,
        "sparsity_target": sparsity,
        "measured_sparsity": measured_sparsity(model, params.prune.modules),
        "prune_seconds": sum(r["seconds"] for r in reports),
        "wall_seconds": time.time() - started,
        "mean_layer_error": sum(x["error"] for x in layers) / max(len(layers), 1),
        "final_block_output_error": reports[-1]["output_error"] if reports else 0.0,
        "source": src.name,
        "key": work_p.name,
    }
    blocks = [
        {k: r.get(k) for k in ("index", "seconds", "output_error", "alpha", "alpha_errors")} for r in reports
    ]
    metrics["blocks"] = blocks
    with atomic_dir(layout.pruned_model(method, sparsity)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(src).save_pretrained(tmp)
        save_masks(tmp / "masks.safetensors", masks)
        for name, obj in (("metrics.json", metrics), ("layers.json", layers), ("blocks.json", blocks)):
            write_json(tmp / name, obj)
    shutil.rmtree(work_p, ignore_errors=True)
    return metrics
