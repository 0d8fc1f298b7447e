"""The resumable block-by-block pruning driver: one (model, options) branch, one block at a time.

Sequential pruning (SparseGPT, Frantar & Alistarh 2023, App. "sequential pruning"; RAKP, Li et al. 2023,
Sec. 4.2) prunes block l from the outputs of blocks < l, already pruned (and, for RAKP, from the dense
model's outputs too: :class:`~robustprune.pruning.streams.BlockInputs`). So block l's inputs are all a
block needs: :class:`Branch` captures block 0's inputs once (:meth:`Branch.start`), prunes one block at a
time from its saved inputs and saves the block's weights, masks, report and the next block's inputs
(:meth:`Branch.run_block`, the step itself is :func:`robustprune.pruning.block.prune_block`), skips a
block whose report is saved, and puts the model together at the end (:meth:`Branch.assemble`, with RAKP's
head refit when asked for). What a branch saves goes to a :class:`BranchStore`:

- :class:`MemoryStore`: nothing leaves the process (``robustprune.pruning.sequential.prune_model``: the
  LM track, SDS, the benchmarks);
- :class:`DirStore`: files in a directory (the prune stage, ``.cache/prune-work/<combo>/<key>/``), so a
  run killed at any point and started again skips every finished block and continues from bit-identical
  saved inputs: it ends with the same masks as an uninterrupted run.

Either way the branch keeps the model and the next inputs in memory between blocks (the fast path): a new
:class:`Branch` (a new process) loads the source and reads the inputs from the store instead. The prune
stage's Prefect tasks find the branch of their process by its directory through :func:`open_branch` (at
most one held at a time), so no live module crosses a task boundary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import nn

from robustprune.checkpoints import load_masks, load_tensors, read_json, save_masks, save_tensors, write_json
from robustprune.modeling import find_blocks, linear_groups, load_classifier
from robustprune.pruning.block import (
    BlockReport,
    block_weights,
    check_options,
    finish_head,
    prune_block,
    prune_block_weights,
)
from robustprune.pruning.layerwise import NO_STATS, LayerReport, PruneOptions, stats_plan
from robustprune.pruning.rakp_head import HeadReport
from robustprune.pruning.streams import BlockInputs, capture_block_inputs, flatten_extras, unflatten_extras
from robustprune.registry import RAKP


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

    def load(self) -> nn.Module:
        if self.kind == "causal-lm":
            from robustprune.lm import load_causal_lm

            return load_causal_lm(self.path)
        return load_classifier(self.path)


@dataclass
class PruneOutcome:
    masks: dict[str, torch.Tensor]
    blocks: list[BlockReport]
    head: HeadReport | None = None  # RAKP's head refit, when asked for


# ------------------------------------------------------------------------------------------- block reports
def report_dict(report: BlockReport) -> dict:
    """A block report as JSON-able data (α candidates keyed by their ``str``)."""
    return {
        "index": report.index,
        "seconds": report.seconds,
        "output_error": report.output_error,
        "alpha": report.alpha,
        "alpha_errors": {str(k): v for k, v in report.alpha_errors.items()},
        "layers": [vars(layer) for layer in report.layers],
    }


def report_of(data: dict) -> BlockReport:
    """The :class:`BlockReport` :func:`report_dict` wrote."""
    return BlockReport(
        index=data["index"],
        layers=[LayerReport(**layer) for layer in data["layers"]],
        output_error=data["output_error"],
        seconds=data["seconds"],
        alpha=data["alpha"],
        alpha_errors={float(k): v for k, v in data["alpha_errors"].items()},
    )


# ------------------------------------------------------------------------------------------------- stores
class BranchStore(Protocol):
    """Where a branch keeps what it computed. A block is finished once its report is saved: ``save_block``
    saves the report last, after the weights, the masks and the next inputs."""

    def finished(self) -> list[int]:
        """The finished blocks' indices, in order."""
        ...

    def started(self) -> bool:
        """Whether block 0's inputs (and the extras) are saved."""
        ...

    def save_start(self, inputs: BlockInputs) -> None: ...

    def save_block(
        self,
        index: int,
        report: BlockReport,
        masks: dict[str, torch.Tensor],
        nxt: BlockInputs | None,
        weights: Callable[[], dict[str, torch.Tensor]],
    ) -> None:
        """Block ``index``'s result: ``nxt`` are block ``index + 1``'s inputs (None: no inputs are needed),
        ``weights()`` its pruned weights (called only by a store that keeps them)."""
        ...

    def inputs(self, index: int, device: torch.device | str) -> BlockInputs: ...

    def weights(self, index: int) -> dict[str, torch.Tensor]: ...

    def masks(self, index: int) -> dict[str, torch.Tensor]: ...

    def report(self, index: int) -> BlockReport: ...


class MemoryStore:
    """A branch that lives only in this process: masks and reports kept, block weights not (the live model
    holds them), inputs only while they are the next block's."""

    def __init__(self) -> None:
        self._masks: dict[int, dict[str, torch.Tensor]] = {}
        self._reports: dict[int, BlockReport] = {}

    def finished(self) -> list[int]:
        return sorted(self._reports)

    def started(self) -> bool:
        return False

    def save_start(self, inputs: BlockInputs) -> None:
        pass

    def save_block(
        self,
        index: int,
        report: BlockReport,
        masks: dict[str, torch.Tensor],
        nxt: BlockInputs | None,
        weights: Callable[[], dict[str, torch.Tensor]],
    ) -> None:
        self._masks[index] = masks
        self._reports[index] = report

    def inputs(self, index: int, device: torch.device | str) -> BlockInputs:
        raise RuntimeError(f"an in-memory branch cannot resume at block {index}: its model was lost")

    def weights(self, index: int) -> dict[str, torch.Tensor]:
        raise RuntimeError(f"an in-memory branch keeps no weights (block {index}): its model was lost")

    def masks(self, index: int) -> dict[str, torch.Tensor]:
        return self._masks[index]

    def report(self, index: int) -> BlockReport:
        return self._reports[index]


class DirStore:
    """A branch in a directory, every file written atomically (:mod:`robustprune.checkpoints`):

    - ``extras.safetensors`` + ``extras.json``: what every block is called with besides its hidden states
      (attention masks, rotary embeddings, ...) and the token masks, captured once at the start;
    - ``inputs_<l>.safetensors``: block l's inputs on both streams (removed once block l is finished);
    - ``block_<l>.safetensors`` / ``masks_<l>.safetensors``: block l's pruned weights and masks;
    - ``block_<l>.json``: block l's report, the marker, written last.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _file(self, stem: str, index: int, suffix: str = ".safetensors") -> Path:
        return self.path / f"{stem}_{index:03d}{suffix}"

    def finished(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in self.path.glob("block_*.json"))

    def started(self) -> bool:
        return self._file("inputs", 0).exists() and (self.path / "extras.json").exists()

    def save_start(self, inputs: BlockInputs) -> None:
        tensors, skeleton = flatten_extras(inputs.extras)
        tensors.update({f"token_mask.{i}": m.cpu() for i, m in enumerate(inputs.token_mask)})
        save_tensors(self.path / "extras.safetensors", tensors)
        write_json(self.path / "extras.json", {"batches": len(inputs.extras), "skeleton": skeleton})
        self._save_inputs(0, inputs)

    def _save_inputs(self, index: int, inputs: BlockInputs) -> None:
        tensors = {f"pruned.{i}": p.cpu() for i, p in enumerate(inputs.pruned)}
        same = all(d is p for d, p in zip(inputs.dense, inputs.pruned, strict=False)) and bool(inputs.dense)
        if not same:  # block 0's two streams are one list of tensors: stored once
            tensors.update({f"dense.{i}": d.cpu() for i, d in enumerate(inputs.dense)})
        meta = {"dense": "pruned" if same else ("yes" if inputs.dense else "no")}
        save_tensors(self._file("inputs", index), tensors, metadata=meta)

    def save_block(
        self,
        index: int,
        report: BlockReport,
        masks: dict[str, torch.Tensor],
        nxt: BlockInputs | None,
        weights: Callable[[], dict[str, torch.Tensor]],
    ) -> None:
        if nxt is not None:
            self._save_inputs(index + 1, nxt)
        save_tensors(self._file("block", index), weights())
        save_masks(self._file("masks", index), masks)
        write_json(self._file("block", index, ".json"), report_dict(report))
        self._file("inputs", index).unlink(missing_ok=True)

    def inputs(self, index: int, device: torch.device | str) -> BlockInputs:
        from safetensors import safe_open

        path = self._file("inputs", index)
        with safe_open(str(path), framework="pt") as f:
            dense_kind = (f.metadata() or {}).get("dense", "yes")
        t = load_tensors(path, device=str(device))
        extras_meta = read_json(self.path / "extras.json")
        ex = load_tensors(self.path / "extras.safetensors", device=str(device))
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

    def weights(self, index: int) -> dict[str, torch.Tensor]:
        return load_tensors(self._file("block", index))

    def masks(self, index: int) -> dict[str, torch.Tensor]:
        return load_masks(self._file("masks", index))

    def report(self, index: int) -> BlockReport:
        return report_of(read_json(self._file("block", index, ".json")))


# ------------------------------------------------------------------------------------------------- driver
@dataclass
class _Live:
    """The model and next inputs a branch keeps in memory between blocks."""

    first: int  # blocks first..next-1 of ``model`` are pruned (the ones before ``first`` are still dense)
    next: int
    model: nn.Module
    inputs: BlockInputs | None  # None: the options read no calibration data (NO_STATS)


def put_blocks(model: nn.Module, store: BranchStore, indices: Sequence[int]) -> None:
    """Put the saved pruned weights of blocks ``indices`` into ``model``."""
    blocks = find_blocks(model)
    for i in indices:
        weights = store.weights(i)
        for group in linear_groups(model, blocks[i]):
            for name, lin in group.items():
                if name in weights:
                    lin.weight.data.copy_(weights[name])


class Branch:
    """One pruning run of the model ``load()`` returns with ``opts``, block by block, resumable from
    ``store``. ``load`` is called once at :meth:`start`, and again only where the in-memory model is not
    there (a new process resuming, a block after a failed one)."""

    def __init__(
        self,
        load: Callable[[], nn.Module],
        opts: PruneOptions,
        store: BranchStore,
        device: torch.device | str = "cpu",
    ) -> None:
        self.load, self.opts, self.store, self.device = load, opts, store, device
        self.reads_data = stats_plan(opts) != NO_STATS  # magnitude without reports: no forward pass at all
        self._live: _Live | None = None

    def start(self, batches: Sequence[dict[str, torch.Tensor]]) -> int:
        """Load the source and check the options against it; unless some block is finished already (a
        resume), capture block 0's inputs from ``batches`` (if not saved yet) and keep the model in memory.
        Returns the number of blocks."""
        model = self.load()
        check_options(model, self.opts)  # a head the options need and the model lacks: fail before any work
        num_blocks = len(find_blocks(model))
        if self.store.finished():
            return num_blocks
        if not self.reads_data:
            self._live = _Live(first=0, next=0, model=model.to(self.device), inputs=None)
        elif not self.store.started():
            inputs = capture_block_inputs(model, batches, self.device)
            self.store.save_start(inputs)
            self._live = _Live(first=0, next=0, model=model, inputs=inputs)
        return num_blocks

    def finished_blocks(self) -> list[int]:
        return self.store.finished()

    def finished(self, index: int) -> bool:
        return index in self.store.finished()

    def run_block(self, index: int) -> BlockReport:
        """Prune block ``index`` and save it; a finished block's saved report, without any work."""
        if self.finished(index):
            return self.store.report(index)
        live, self._live = self._live, None  # a failure below must not leave a half-pruned model here
        if live is not None and live.next == index:
            model, inputs, first = live.model, live.inputs, live.first
        else:  # blocks < index are folded into the saved inputs
            model = self.load().to(self.device).eval()
            inputs = self.store.inputs(index, self.device) if self.reads_data else None
            first = index
        if inputs is None:
            nxt, (masks, report) = None, prune_block_weights(model, index, self.opts)
        else:
            nxt, masks, report = prune_block(model, index, inputs, self.opts)
        self.store.save_block(index, report, masks, nxt, lambda: block_weights(model, index, self.opts))
        self._live = _Live(first=first, next=index + 1, model=model, inputs=nxt)
        return report

    def assemble(self) -> tuple[nn.Module, PruneOutcome]:
        """The pruned model of a finished branch (the one in memory, or the source with the saved blocks put
        in), its masks and block reports, and RAKP's head refit (``rakp.refit_head``) from the last block's
        outputs. The branch lets go of its model."""
        done = self.store.finished()
        live, self._live = self._live, None
        if live is not None and live.next == len(done):
            model, last = live.model, live.inputs
            put_blocks(model, self.store, range(live.first))
        else:
            model, last = self.load().to(self.device).eval(), None
            put_blocks(model, self.store, done)
        n = len(find_blocks(model))
        if done != list(range(n)):
            raise RuntimeError(f"{len(done)} finished blocks {done} for a model of {n} blocks")
        outcome = PruneOutcome(masks={}, blocks=[self.store.report(i) for i in range(n)])
        for i in range(n):
            outcome.masks.update(self.store.masks(i))
        if self.opts.method == RAKP.name and self.opts.rakp.refit_head:
            last = last if last is not None else self.store.inputs(n, self.device)
            outcome.head = finish_head(model, last, self.opts, outcome.blocks)
        return model, outcome


# ------------------------------------------------------------- the branch of this process, found by its dir
def branch_key(model: str, calib: str, opts: PruneOptions, batch_size: int, code: str) -> str:
    """A branch's content key, from the digests of what its result depends on: the source weights
    (``model``), the calibration data (``calib``) and its batching, the options and the code."""
    key_src = json.dumps(
        {"model": model, "calib": calib, "opts": repr(opts), "batch": batch_size, "code": code},
        sort_keys=True,
    )
    return hashlib.sha256(key_src.encode()).hexdigest()[:16]


_OPEN: dict[Path, Branch] = {}  # at most one: the branch this process works on (its model is in memory)


def open_branch(
    path: str | Path,
    load: Callable[[], nn.Module],
    opts: PruneOptions,
    device: torch.device | str = "cpu",
    *,
    fresh: bool = False,
) -> Branch:
    """The branch stored in directory ``path``: the one this process already holds, with its model and next
    inputs in memory (the previous block task's), else (or ``fresh``) a new one that reads the files.

    ``path`` names its content (the prune stage's key hashes source, data, options and code), so the held
    branch is the same computation. Opening another branch lets go of the held one.
    """
    path = Path(path)
    branch = _OPEN.get(path)
    if branch is None or fresh:
        _OPEN.clear()
        branch = _OPEN[path] = Branch(load, opts, DirStore(path), device)
    return branch


def close_branch(path: str | Path | None = None) -> None:
    """Let go of the branch held for ``path`` (None: of any)."""
    if path is None:
        _OPEN.clear()
    else:
        _OPEN.pop(Path(path), None)
