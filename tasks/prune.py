"""prune: one branch per (method, sparsity); one task per transformer block, each block computed once.

The driver is the library's :class:`robustprune.pruning.branch.Branch` on a
:class:`~robustprune.pruning.branch.DirStore` in ``.cache/prune-work/<combo>/<key>/``, where the key hashes
everything the result depends on (source model, calibration set, solver options, code). These tasks only
map a branch's steps to Prefect tasks: set-up (block 0's inputs), one task per block, finalize (the pruned
model saved as a Hugging Face directory, with its masks and reports). A block task finds the branch its
process already holds by the work directory (:func:`robustprune.pruning.branch.open_branch`): the model
and the inputs the previous block task left in memory are used, the files are still written for a resume,
and no live module is passed between tasks. A run killed at any point and started again skips every
finished block and continues from bit-identical saved inputs, so it ends with the same masks as an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from prefect import task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from robustprune.calibration import batches
from robustprune.checkpoints import (
    atomic_dir,
    keep_only_dirs,
    load_tensors,
    read_json,
    save_masks,
    write_json,
)
from robustprune.config import FINETUNED_NAME, Params
from robustprune.interrupt import raise_if_stopped
from robustprune.modeling import load_tokenizer, measured_sparsity, resolve_device
from robustprune.options import prune_options
from robustprune.own_model import set_label_names
from robustprune.pruning.branch import Branch, Source, close_branch, open_branch, report_dict
from robustprune.pruning.layerwise import PruneOptions
from tasks.common import Layout, code_digest, combo_name, label_names, model_digest, sha256_files


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow (a benchmark driving the functions below)
        return logging.getLogger("robustprune.prune")


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


def options(params: Params, method: str, sparsity: str) -> PruneOptions:
    return prune_options(params.prune, method, sparsity)


def _calib_batches(params: Params, layout: Layout) -> list[dict[str, torch.Tensor]]:
    calib = load_tensors(layout.calibration / "calibration.safetensors")
    return batches(calib, params.calibrate.batch_size)


def branch_key(source: Source, calib_digest: str, opts: PruneOptions, batch_size: int) -> str:
    """The branch's content key: source weights, calibration data and batching, options, code."""
    key_src = json.dumps(
        {
            "model": model_digest(source.path),
            "calib": calib_digest,
            "opts": repr(opts),
            "batch": batch_size,
            "code": code_digest("robustprune.pruning", "robustprune.modeling", "tasks.prune"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(key_src.encode()).hexdigest()[:16]


def _branch(params: Params, layout: Layout, method: str, sparsity: str, work: str | Path) -> Branch:
    """The branch in ``work``: the one this process holds (the previous block task's), else read from disk."""
    source = Source.of(source_model(params, layout))
    opts = options(params, method, sparsity)
    return open_branch(work, source.load, opts, resolve_device(params.runtime.device))


# -------------------------------------------------------------------------------------------- Prefect tasks
@task(name="prune-setup", tags=["cpu"])
def prune_setup(params: Params, layout: Layout, method: str, sparsity: str) -> dict:
    """Create (or find, to resume) the branch's work dir and capture block 0's inputs and the extras."""
    src = source_model(params, layout)
    source = Source.of(src)
    opts = options(params, method, sparsity)
    calib_file = layout.calibration / "calibration.safetensors"
    key = branch_key(source, sha256_files(calib_file), opts, params.calibrate.batch_size)
    work = layout.prune_work / combo_name(method, sparsity) / key
    final = layout.pruned_model(method, sparsity) / "metrics.json"
    if final.exists() and read_json(final).get("key") == key:
        _logger().info(
            "cache hit: %s already pruned from the same model, data, options and code", final.parent.name
        )
        return {"cached": True, "metrics": read_json(final), "work": str(work)}
    device = resolve_device(params.runtime.device)
    branch = open_branch(work, source.load, opts, device, fresh=True)  # nothing held from an earlier run
    resumed = len(branch.finished_blocks())
    if resumed:
        _logger().info("resuming %s: %d blocks already pruned", work, resumed)
    num_blocks = branch.start(_calib_batches(params, layout))
    # older keys of the same branch are stale (other inputs or options): drop them
    keep_only_dirs(work.parent, [work.name])
    return {"work": str(work), "source": str(src), "num_blocks": num_blocks, "resumed_blocks": resumed}


@task(name="prune-block", tags=["gpu"], retries=1)
def prune_block_task(
    params: Params, layout: Layout, method: str, sparsity: str, work: str, index: int
) -> dict:
    """Prune block ``index`` of one branch; a no-op returning the saved report if it already finished."""
    branch = _branch(params, layout, method, sparsity, work)
    if branch.finished(index):
        _logger().info("block %d already pruned (resumed from %s)", index, work)
    return report_dict(branch.run_block(index))


@task(name="prune-finalize", tags=["cpu"])
def prune_finalize(
    params: Params, layout: Layout, method: str, sparsity: str, work: str, started: float
) -> dict:
    """Assemble the pruned model from the finished blocks and save it as a Hugging Face directory."""
    work_p = Path(work)
    src = source_model(params, layout)
    model, outcome = _branch(params, layout, method, sparsity, work).assemble()
    close_branch(work)
    reports = [report_dict(b) for b in outcome.blocks]
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
    if outcome.head is not None:
        metrics["head_refit"] = vars(outcome.head)
    blocks = [
        {k: r.get(k) for k in ("index", "seconds", "output_error", "alpha", "alpha_errors")} for r in reports
    ]
    metrics["blocks"] = blocks
    set_label_names(model, label_names(layout))  # every saved classifier carries the data's label mapping
    with atomic_dir(layout.pruned_model(method, sparsity)) as tmp:
        model.cpu().save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(src).save_pretrained(tmp)
        save_masks(tmp / "masks.safetensors", outcome.masks)
        for name, obj in (("metrics.json", metrics), ("layers.json", layers), ("blocks.json", blocks)):
            write_json(tmp / name, obj)
    shutil.rmtree(work_p, ignore_errors=True)
    return metrics


@task(name="prune-branch", tags=["gpu"])
def prune_branch(params: Params, layout: Layout, method: str, sparsity: str) -> dict:
    """One (method, sparsity) branch: setup, every block in order, finalize (each a nested task run).

    The branches are independent, so the flow submits one per combination and a task runner with several
    workers (runtime.task_runner / max_workers) prunes them in parallel; the blocks of one branch stay in
    order in one process (each block's inputs are the previous block's outputs, kept in memory).
    """
    name = combo_name(method, sparsity)
    started = time.time()
    setup = prune_setup(params, layout, method, sparsity)
    if setup.get("cached"):
        return {"cached": True, "metrics": setup["metrics"], "blocks": []}
    blocks = []
    for i in range(setup["num_blocks"]):
        raise_if_stopped()  # a branch runs in a task-runner worker thread: stop between blocks on SIGTERM/SIGINT
        blocks.append(
            prune_block_task.with_options(task_run_name=f"{name}-block-{i}")(
                params, layout, method, sparsity, setup["work"], i
            )
        )
    metrics = prune_finalize(params, layout, method, sparsity, setup["work"], started)
    return {"cached": False, "metrics": metrics, "blocks": blocks}
