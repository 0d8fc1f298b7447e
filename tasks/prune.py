"""prune: one branch per (method, sparsity); one task per transformer block, each block computed once.

The driver is the library's :class:`robustprune.pruning.branch.Branch` on a
:class:`~robustprune.pruning.branch.DirStore` in ``.cache/prune-work/<combo>/<key>/``, where the key hashes
everything the result depends on (source model, calibration set, solver options, code). These tasks only
map a branch's steps to Prefect tasks: set-up (the branch's :class:`BranchPlan`, read from params once, and
block 0's inputs), one task per block, finalize (the pruned model saved as a Hugging Face directory, with its
masks and reports); the block tasks and finalize take the plan, not params. A block task finds the branch its
process already holds by the work directory (:func:`robustprune.pruning.branch.open_branch`): the model
and the inputs the previous block task left in memory are used, the files are still written for a resume,
and no live module is passed between tasks. A run killed at any point and started again skips every
finished block and continues from bit-identical saved inputs, so it ends with the same masks as an
uninterrupted run.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from prefect import task
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from robustprune.calibration import load_batches
from robustprune.checkpoints import atomic_dir, keep_only_dirs, read_json, save_masks, write_json
from robustprune.config import Params
from robustprune.interrupt import raise_if_stopped
from robustprune.modeling import load_tokenizer, measured_sparsity, resolve_device
from robustprune.options import prune_options
from robustprune.own_model import set_label_names
from robustprune.pruning.branch import Source, branch_key, close_branch, open_branch, report_dict
from robustprune.pruning.layerwise import PruneOptions
from robustprune.sources import source_model  # noqa: F401  (re-exported: benchmarks import it from here)
from tasks.common import Layout, code_digest, combo_name, label_names, model_digest, sha256_files


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow (a benchmark driving the functions below)
        return logging.getLogger("robustprune.prune")


def options(params: Params, method: str, sparsity: str) -> PruneOptions:
    return prune_options(params.prune, method, sparsity)


def _calib_batches(params: Params, layout: Layout) -> list[dict[str, torch.Tensor]]:
    return load_batches(layout.calibration / "calibration.safetensors", params.calibrate.batch_size)


@dataclass(frozen=True)
class BranchPlan:
    """Everything one (method, sparsity) branch reads from params and the layout, resolved once by the set-up
    task (:func:`plan_branch`): the block tasks and finalize take this, not ``params``."""

    method: str
    sparsity: str
    combo: str  # combo_name(method, sparsity): the work dir's parent, the block tasks' run names
    source: Path  # the dense model (robustprune.sources.source_model)
    opts: PruneOptions
    device: str  # runtime.device
    calibration: Path  # the calibration set's file
    batch_size: int  # calibrate.batch_size
    modules: str | None  # prune.modules: the Linears whose sparsity the metrics measure
    work: Path  # .cache/prune-work/<combo>/<key>/
    output: Path  # models/pruned/<combo>/
    key: str  # the branch's content key (robustprune.pruning.branch.branch_key)


def plan_branch(params: Params, layout: Layout, method: str, sparsity: str) -> BranchPlan:
    """The branch's plan: source, options, calibration data and the content key that names the work dir
    (source weights, calibration data and batching, options, code)."""
    opts = prune_options(params.prune, method, sparsity)
    source = source_model(params, layout)
    calibration = layout.calibration / "calibration.safetensors"
    batch_size = params.calibrate.batch_size
    key = branch_key(
        model_digest(source),
        sha256_files(calibration),
        opts,
        batch_size,
        code_digest("robustprune.pruning", "robustprune.modeling", "tasks.prune"),
    )
    combo = combo_name(method, sparsity)
    return BranchPlan(
        method=method,
        sparsity=sparsity,
        combo=combo,
        source=source,
        opts=opts,
        device=params.runtime.device,
        calibration=calibration,
        batch_size=batch_size,
        modules=params.prune.modules,
        work=layout.prune_work / combo / key,
        output=layout.pruned_model(method, sparsity),
        key=key,
    )


# -------------------------------------------------------------------------------------------- Prefect tasks
@task(name="prune-setup", tags=["cpu"])
def prune_setup(params: Params, layout: Layout, method: str, sparsity: str) -> dict:
    """Plan the branch (the one place its params are read); then, unless its model is saved already with the
    same key, create (or find, to resume) its work dir and capture block 0's inputs and the extras."""
    plan = plan_branch(params, layout, method, sparsity)
    final = plan.output / "metrics.json"
    if final.exists() and read_json(final).get("key") == plan.key:
        _logger().info(
            "cache hit: %s already pruned from the same model, data, options and code", final.parent.name
        )
        return {"cached": True, "metrics": read_json(final), "work": str(plan.work), "plan": plan}
    source = Source.of(plan.source)
    device = resolve_device(plan.device)
    branch = open_branch(plan.work, source.load, plan.opts, device, fresh=True)  # nothing held from before
    resumed = len(branch.finished_blocks())
    if resumed:
        _logger().info("resuming %s: %d blocks already pruned", plan.work, resumed)
    num_blocks = branch.start(load_batches(plan.calibration, plan.batch_size))
    # older keys of the same branch are stale (other inputs or options): drop them
    keep_only_dirs(plan.work.parent, [plan.work.name])
    return {
        "work": str(plan.work),
        "source": str(plan.source),
        "num_blocks": num_blocks,
        "resumed_blocks": resumed,
        "plan": plan,
    }


@task(name="prune-block", tags=["gpu"], retries=1)
def prune_block_task(plan: BranchPlan, index: int) -> dict:
    """Prune block ``index`` of one branch; a no-op returning the saved report if it already finished. The
    branch is the one this process holds (the previous block task's), else read from the work dir."""
    branch = open_branch(plan.work, Source.of(plan.source).load, plan.opts, resolve_device(plan.device))
    if branch.finished(index):
        _logger().info("block %d already pruned (resumed from %s)", index, plan.work)
    return report_dict(branch.run_block(index))


@task(name="prune-finalize", tags=["cpu"])
def prune_finalize(plan: BranchPlan, labels: list[str], started: float) -> dict:
    """Assemble the pruned model from the finished blocks and save it as a Hugging Face directory (with
    ``labels``, the data's label names)."""
    source = Source.of(plan.source)
    model, outcome = open_branch(plan.work, source.load, plan.opts, resolve_device(plan.device)).assemble()
    close_branch(plan.work)
    reports = [report_dict(b) for b in outcome.blocks]
    layers = [{"block": r["index"], **layer} for r in reports for layer in r["layers"]]
    metrics = {
        "method": plan.method,
        "sparsity_target": plan.sparsity,
        "measured_sparsity": measured_sparsity(model, plan.modules),
        "prune_seconds": sum(r["seconds"] for r in reports),
        "wall_seconds": time.time() - started,
        "mean_layer_error": sum(x["error"] for x in layers) / max(len(layers), 1),
        "final_block_output_error": reports[-1]["output_error"] if reports else 0.0,
        "source": plan.source.name,
        "key": plan.work.name,
    }
    if outcome.head is not None:
        metrics["head_refit"] = vars(outcome.head)
    blocks = [
        {k: r.get(k) for k in ("index", "seconds", "output_error", "alpha", "alpha_errors")} for r in reports
    ]
    metrics["blocks"] = blocks
    set_label_names(model, labels)  # every saved classifier carries the data's label mapping
    with atomic_dir(plan.output) as tmp:
        model.cpu().save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(plan.source).save_pretrained(tmp)
        save_masks(tmp / "masks.safetensors", outcome.masks)
        for name, obj in (("metrics.json", metrics), ("layers.json", layers), ("blocks.json", blocks)):
            write_json(tmp / name, obj)
    shutil.rmtree(plan.work, ignore_errors=True)
    return metrics


@task(name="prune-branch", tags=["gpu"])
def prune_branch(params: Params, layout: Layout, method: str, sparsity: str) -> dict:
    """One (method, sparsity) branch: setup, every block in order, finalize (each a nested task run).

    The branches are independent, so the flow submits one per combination and a task runner with several
    workers (runtime.task_runner / max_workers) prunes them in parallel; the blocks of one branch stay in
    order in one process (each block's inputs are the previous block's outputs, kept in memory).
    """
    started = time.time()
    setup = prune_setup(params, layout, method, sparsity)
    if setup.get("cached"):
        return {"cached": True, "metrics": setup["metrics"], "blocks": []}
    plan = setup["plan"]
    blocks = []
    for i in range(setup["num_blocks"]):
        raise_if_stopped()  # a branch runs in a task-runner worker thread: stop between blocks on SIGTERM/SIGINT
        blocks.append(prune_block_task.with_options(task_run_name=f"{plan.combo}-block-{i}")(plan, i))
    metrics = prune_finalize(plan, label_names(layout), started)
    return {"cached": False, "metrics": metrics, "blocks": blocks}
