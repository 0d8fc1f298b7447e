"""prune: one branch per (method, sparsity); one task per transformer block, each block computed once.

A branch's state lives in ``.cache/prune-work/<combo>/<key>/``, where the key hashes everything the result
depends on (source model, calibration set, solver options, code):

- ``extras.safetensors`` + ``extras.json``: what every block is called with besides its hidden states
  (attention masks, rotary embeddings, ...) and the token masks, captured once from the embeddings at set-up;
- ``inputs_<l>.safetensors``: block l's inputs on both streams, written by block l-1's task;
- ``block_<l>.safetensors`` / ``masks_<l>.safetensors``: block l's pruned weights and masks;
- ``block_<l>.json``: the marker, written last. Every file is written atomically.

Block l's task prunes block l of the source model from its saved inputs: the blocks before it are already
folded into those inputs, so nothing is replayed. When the same process ran block l-1 a moment ago, the
model and the inputs are taken from memory instead of the files (the files are still written, for a
resume). A run killed at any point and started again skips every block that has a marker and continues
from bit-identical saved inputs, so it ends with the same masks as an uninterrupted run. Finalize takes
the model from memory too when the whole branch ran in this process, else loads the source once and puts
the saved blocks in; with ``prune.rakp.refit_head`` it rectifies the classifier head from the last
block's outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from prefect import task
from prefect.exceptions import MissingContextError
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
from robustprune.config import FINETUNED_NAME, Params
from robustprune.interrupt import raise_if_stopped
from robustprune.modeling import (
    find_blocks,
    linear_groups,
    load_classifier,
    load_tokenizer,
    measured_sparsity,
    resolve_device,
)
from robustprune.options import prune_options
from robustprune.own_model import set_label_names
from robustprune.pruning.sequential import (
    BlockInputs,
    BlockReport,
    HeadReport,
    PruneOptions,
    capture_block_inputs,
    check_options,
    finish_head,
    prune_block,
)
from robustprune.pruning.streams import flatten_extras, unflatten_extras
from robustprune.registry import RAKP
from tasks.common import Layout, code_digest, combo_name, label_names, model_digest, sha256_files


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow (a benchmark driving the functions below)
        return logging.getLogger("robustprune.prune")


@dataclass(frozen=True)
class Source:
    """The dense model a branch prunes: a local Hugging Face directory and how to load it."""

    path: str
    kind: Literal["classifier", "causal-lm"] = "classifier"

    @classmethod
    def of(cls, path: str | Path) -> Source:
        """A saved model directory, its kind read from ``config.json`` (a ``...ForCausalLM`` is a causal LM)."""
        archs = read_json(Path(path) / "config.json").get("architectures") or []
        return cls(str(path), "causal-lm" if any(a.endswith("ForCausalLM") for a in archs) else "classifier")

    def load(self) -> torch.nn.Module:
        if self.kind == "causal-lm":
            from robustprune.lm import load_causal_lm

            return load_causal_lm(self.path)
        return load_classifier(self.path)


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


# ------------------------------------------------------------------------ a branch's state, on disk and live
@dataclass
class _Live:
    """The model and next inputs a block task leaves in memory for the next block task of its branch."""

    first: int  # blocks first..next-1 of ``model`` are pruned (the ones before ``first`` are still dense)
    next: int
    model: torch.nn.Module
    inputs: BlockInputs


_LIVE: dict[str, _Live] = {}  # at most one branch: the one this process is working on


def _save_inputs(path: Path, inputs: BlockInputs) -> None:
    tensors = {f"pruned.{i}": p.cpu() for i, p in enumerate(inputs.pruned)}
    same = all(d is p for d, p in zip(inputs.dense, inputs.pruned, strict=False)) and bool(inputs.dense)
    if not same:  # block 0's two streams are one list of tensors: stored once
        tensors.update({f"dense.{i}": d.cpu() for i, d in enumerate(inputs.dense)})
    save_tensors(path, tensors, metadata={"dense": "pruned" if same else ("yes" if inputs.dense else "no")})


def _save_extras(work: Path, inputs: BlockInputs) -> None:
    tensors, skeleton = flatten_extras(inputs.extras)
    tensors.update({f"token_mask.{i}": m.cpu() for i, m in enumerate(inputs.token_mask)})
    save_tensors(work / "extras.safetensors", tensors)
    write_json(work / "extras.json", {"batches": len(inputs.extras), "skeleton": skeleton})


def _load_inputs(work: Path, index: int, device: torch.device) -> BlockInputs:
    from safetensors import safe_open

    path = work / f"inputs_{index:03d}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        dense_kind = (f.metadata() or {}).get("dense", "yes")
    t = load_tensors(path, device=str(device))
    extras_meta = read_json(work / "extras.json")
    ex = load_tensors(work / "extras.safetensors", device=str(device))
    n = extras_meta["batches"]
    pruned = [t[f"pruned.{i}"] for i in range(n)]
    if dense_kind == "pruned":
        dense = list(pruned)
    else:
        dense = [t[f"dense.{i}"] for i in range(n)] if dense_kind == "yes" else []
    return BlockInputs(
        pruned=pruned,
        dense=dense,
        extras=unflatten_extras(ex, extras_meta["skeleton"], device),
        token_mask=[ex[f"token_mask.{i}"] for i in range(n)],
    )


def _apply_blocks(model: torch.nn.Module, work: Path, indices: range) -> None:
    """Put the saved pruned weights of blocks ``indices`` into ``model``."""
    blocks = find_blocks(model)
    for i in indices:
        weights = load_tensors(work / f"block_{i:03d}.safetensors")
        for group in linear_groups(model, blocks[i]):
            for name, lin in group.items():
                if name in weights:
                    lin.weight.data.copy_(weights[name])


def start_branch(
    work: Path, source: Source, calib: list[dict[str, torch.Tensor]], opts: PruneOptions, device: torch.device
) -> dict:
    """Find the branch's state in ``work`` or create it: block 0's inputs and the extras, captured once."""
    model = source.load()
    check_options(model, opts)  # a head the options need and the model lacks: fail before any work
    num_blocks = len(find_blocks(model))
    done = sorted(work.glob("block_*.json"))
    if done:
        _logger().info("resuming %s: %d of %d blocks already pruned", work, len(done), num_blocks)
    elif not (work / "inputs_000.safetensors").exists() or not (work / "extras.json").exists():
        inputs = capture_block_inputs(model, calib, device)
        _save_extras(work, inputs)
        _save_inputs(work / "inputs_000.safetensors", inputs)
        _LIVE.clear()
        _LIVE[str(work)] = _Live(first=0, next=0, model=model, inputs=inputs)
    return {"num_blocks": num_blocks, "resumed_blocks": len(done)}


def run_block(work: Path, source: Source, opts: PruneOptions, index: int, device: torch.device) -> dict:
    """Prune block ``index`` of the branch in ``work``; save its weights, masks, report and the next inputs."""
    live = _LIVE.pop(str(work), None)  # taken out: a failure below must not leave a half-pruned model there
    if live is not None and live.next == index:
        model, inputs, first = live.model, live.inputs, live.first
    else:
        model = source.load().to(device).eval()  # blocks < index are folded into the saved inputs
        inputs, first = _load_inputs(work, index, device), index
    _LIVE.clear()
    nxt, masks, report = prune_block(model, index, inputs, opts)
    block = find_blocks(model)[index]
    weights = {
        name: lin.weight.data.cpu()
        for g in linear_groups(model, block, opts.modules)
        for name, lin in g.items()
    }
    _save_inputs(work / f"inputs_{index + 1:03d}.safetensors", nxt)
    save_tensors(work / f"block_{index:03d}.safetensors", weights)
    save_masks(work / f"masks_{index:03d}.safetensors", masks)
    rep = _report_dict(report)
    write_json(work / f"block_{index:03d}.json", rep)
    (work / f"inputs_{index:03d}.safetensors").unlink(missing_ok=True)
    _LIVE[str(work)] = _Live(first=first, next=index + 1, model=model, inputs=nxt)
    return rep


def _report_dict(report: BlockReport) -> dict:
    return {
        "index": report.index,
        "seconds": report.seconds,
        "output_error": report.output_error,
        "alpha": report.alpha,
        "alpha_errors": {str(k): v for k, v in report.alpha_errors.items()},
        "layers": [vars(layer) for layer in report.layers],
    }


def assemble(
    work: Path, source: Source, opts: PruneOptions, device: torch.device
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[dict], HeadReport | None]:
    """The pruned model of a finished branch, its masks, block reports and (``refit_head``) head report."""
    live = _LIVE.pop(str(work), None)
    reports = [read_json(p) for p in sorted(work.glob("block_*.json"))]
    n = len(reports)
    if live is not None and live.next == n:
        model, last = live.model, live.inputs
        _apply_blocks(model, work, range(live.first))
    else:
        model, last = source.load().to(device).eval(), None
        _apply_blocks(model, work, range(n))
    if n != len(find_blocks(model)) or [r["index"] for r in reports] != list(range(n)):
        raise RuntimeError(f"{work}: {n} block reports for {len(find_blocks(model))} blocks")
    masks = {}
    for i in range(n):
        masks.update(load_masks(work / f"masks_{i:03d}.safetensors"))
    head = None
    if opts.method == RAKP.name and opts.rakp.refit_head:
        last = last if last is not None else _load_inputs(work, n, device)
        last_block = BlockReport(index=n - 1, alpha=reports[-1]["alpha"])
        head = finish_head(model, last, opts, [last_block])
    return model, masks, reports, head


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
    state = start_branch(
        work, source, _calib_batches(params, layout), opts, resolve_device(params.runtime.device)
    )
    # older keys of the same branch are stale (other inputs or options): drop them
    for stale in work.parent.glob("*"):
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)
    return {"work": str(work), "source": str(src), **state}


@task(name="prune-block", tags=["gpu"], retries=1)
def prune_block_task(
    params: Params, layout: Layout, method: str, sparsity: str, work: str, index: int
) -> dict:
    """Prune block ``index`` of one branch; a no-op returning the saved report if it already finished."""
    marker = Path(work) / f"block_{index:03d}.json"
    if marker.exists():
        _logger().info("block %d already pruned (resumed from %s)", index, marker)
        return read_json(marker)
    source = Source.of(source_model(params, layout))
    opts = options(params, method, sparsity)
    return run_block(Path(work), source, opts, index, resolve_device(params.runtime.device))


@task(name="prune-finalize", tags=["cpu"])
def prune_finalize(
    params: Params, layout: Layout, method: str, sparsity: str, work: str, started: float
) -> dict:
    """Assemble the pruned model from the finished blocks and save it as a Hugging Face directory."""
    work_p = Path(work)
    src = source_model(params, layout)
    opts = options(params, method, sparsity)
    model, masks, reports, head = assemble(
        work_p, Source.of(src), opts, resolve_device(params.runtime.device)
    )
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
    if head is not None:
        metrics["head_refit"] = vars(head)
    blocks = [
        {k: r.get(k) for k in ("index", "seconds", "output_error", "alpha", "alpha_errors")} for r in reports
    ]
    metrics["blocks"] = blocks
    set_label_names(model, label_names(layout))  # every saved classifier carries the data's label mapping
    with atomic_dir(layout.pruned_model(method, sparsity)) as tmp:
        model.cpu().save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(src).save_pretrained(tmp)
        save_masks(tmp / "masks.safetensors", masks)
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
