"""The resumable block driver (robustprune.pruning.branch): in memory, on disk, stopped and resumed.

Every run here is compared with :func:`prune_model` (the same driver on a MemoryStore): the masks and every
weight must be equal, bit for bit, however the branch was cut into tasks, processes and restarts.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from robustprune.pruning import Pattern
from robustprune.pruning import branch as branch_mod
from robustprune.pruning.branch import (
    Branch,
    DirStore,
    Source,
    close_branch,
    open_branch,
    report_dict,
    report_of,
)
from robustprune.pruning.sequential import prune_model
from tests.conftest import tiny_bert, tiny_llama
from tests.unit.test_sequential import TWO_FOUR, _opts

CASES = {
    "rakp-refit": ("bert", _opts("rakp", TWO_FOUR, alpha=1.0, refit_head=True)),
    "rakp-adaptive-output": (
        "llama",
        _opts("rakp", TWO_FOUR, alpha=None, alpha_criterion="output", output_stride=2),
    ),
    "sparsegpt-lean": ("bert", _opts("sparsegpt", TWO_FOUR, track_dense=False)),
    "magnitude-no-data": ("bert", _opts("magnitude", Pattern(sparsity=0.5), track_dense=False)),
}


class Loader:
    """A fresh dense copy of ``model`` at every call, counted."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.calls = model, 0

    def __call__(self) -> torch.nn.Module:
        self.calls += 1
        return copy.deepcopy(self.model)


def _setup(case: str, calib_batches):
    arch, opts = CASES[case]
    model = tiny_llama() if arch == "llama" else tiny_bert()
    batches = (
        calib_batches if arch == "bert" else [{"input_ids": b["input_ids"][:, :8]} for b in calib_batches]
    )
    ref = copy.deepcopy(model)
    want = prune_model(ref, batches, opts)
    return Loader(model), opts, batches, ref, want


def _assert_same(got_model, got, ref, want) -> None:
    assert got.masks.keys() == want.masks.keys()
    assert all(torch.equal(got.masks[k], want.masks[k]) for k in want.masks)
    for (k, x), y in zip(ref.state_dict().items(), got_model.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert [b.alpha for b in got.blocks] == [b.alpha for b in want.blocks]
    assert [b.index for b in got.blocks] == list(range(len(want.blocks)))
    assert (got.head is None) == (want.head is None)
    if want.head is not None:
        assert vars(got.head) == vars(want.head)


def _mtimes(path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(path.iterdir())}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fresh_each_block", [False, True])
def test_every_block_on_disk_equals_prune_model(tmp_path, calib_batches, case, fresh_each_block):
    """One branch through the on-disk store, held in memory or a new Branch (a new process) for every block
    and for the assembly: the same masks, weights, α and head refit as prune_model."""
    load, opts, batches, ref, want = _setup(case, calib_batches)
    branch = Branch(load, opts, DirStore(tmp_path), "cpu")
    n = branch.start(batches)
    for i in range(n):
        if fresh_each_block:
            branch = Branch(load, opts, DirStore(tmp_path), "cpu")
        branch.run_block(i)
    if fresh_each_block:
        branch = Branch(load, opts, DirStore(tmp_path), "cpu")
    model, got = branch.assemble()
    _assert_same(model, got, ref, want)
    assert load.calls == (1 if not fresh_each_block else 1 + n + 1)
    if not fresh_each_block:
        assert model is not load.model  # the held model: the one start() loaded
    assert not list(tmp_path.glob("inputs_000*")), "a finished block's inputs are removed"


@pytest.mark.parametrize("case", ["rakp-refit", "rakp-adaptive-output"])
def test_stopped_after_block_k_and_resumed_gives_the_same_masks(tmp_path, calib_batches, case):
    """Stopped after block 0 (the in-memory model and inputs dropped), resumed by a new Branch that starts
    again: block 0 is not redone, block 1 is pruned from the saved inputs, the result equals prune_model's."""
    load, opts, batches, ref, want = _setup(case, calib_batches)
    first = Branch(load, opts, DirStore(tmp_path), "cpu")
    first.start(batches)
    first.run_block(0)
    del first
    before = _mtimes(tmp_path)
    resumed = Branch(load, opts, DirStore(tmp_path), "cpu")
    n = resumed.start(batches)
    assert resumed.finished_blocks() == [0]
    assert not (tmp_path / "inputs_000.safetensors").exists(), "a resume captures nothing again"
    for i in range(n):
        resumed.run_block(i)
    model, got = resumed.assemble()
    _assert_same(model, got, ref, want)
    after = _mtimes(tmp_path)
    for name in ("block_000.json", "block_000.safetensors", "masks_000.safetensors", "extras.safetensors"):
        assert after[name] == before[name], f"{name} was rewritten on resume"


def test_a_finished_block_is_not_recomputed(tmp_path, calib_batches, monkeypatch):
    """A block with its marker returns its saved report: no model loaded, no kernel run, no file written."""
    load, opts, batches, *_ = _setup("rakp-refit", calib_batches)
    branch = Branch(load, opts, DirStore(tmp_path), "cpu")
    n = branch.start(batches)
    reports = [branch.run_block(i) for i in range(n)]
    before = _mtimes(tmp_path)
    calls = []
    monkeypatch.setattr(branch_mod, "prune_block", lambda *a: calls.append(a))
    again = Branch(load, opts, DirStore(tmp_path), "cpu")
    loads = load.calls
    got = [again.run_block(i) for i in range(n)]
    assert calls == [] and load.calls == loads
    assert _mtimes(tmp_path) == before
    assert [report_dict(r) for r in got] == [report_dict(r) for r in reports]


def test_a_half_written_block_is_recomputed(tmp_path, calib_batches, monkeypatch):
    """Killed while block 1 was being saved (its weights written, a corrupt masks file, no marker): the
    resumed run prunes block 1 again from its saved inputs and ends with prune_model's result."""
    load, opts, batches, ref, want = _setup("rakp-refit", calib_batches)
    branch = Branch(load, opts, DirStore(tmp_path), "cpu")
    n = branch.start(batches)
    branch.run_block(0)

    def killed(dest, obj):
        if os.path.basename(dest) == "block_001.json":
            raise KeyboardInterrupt("killed before the marker")
        return real(dest, obj)

    real = branch_mod.write_json
    monkeypatch.setattr(branch_mod, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        branch.run_block(1)
    monkeypatch.setattr(branch_mod, "write_json", real)
    assert (tmp_path / "block_001.safetensors").exists() and not (tmp_path / "block_001.json").exists()
    (tmp_path / "masks_001.safetensors").write_bytes(b"half-written")
    resumed = Branch(load, opts, DirStore(tmp_path), "cpu")
    assert resumed.start(batches) == n and resumed.finished_blocks() == [0]
    for i in range(n):
        resumed.run_block(i)
    model, got = resumed.assemble()
    _assert_same(model, got, ref, want)


def test_open_branch_holds_one_branch_per_process(tmp_path, calib_batches):
    """The prune stage's block tasks find their branch by its directory: the source is loaded once for the
    whole branch; opening another branch lets go of the first; close_branch lets go of it."""
    load, opts, batches, ref, want = _setup("sparsegpt-lean", calib_batches)
    work = tmp_path / "a"
    n = open_branch(work, load, opts, fresh=True).start(batches)
    for i in range(n):
        open_branch(work, load, opts).run_block(i)
    held = open_branch(work, load, opts)
    assert open_branch(work, load, opts) is held
    model, got = held.assemble()
    _assert_same(model, got, ref, want)
    assert load.calls == 1
    assert open_branch(tmp_path / "b", load, opts) is not held
    assert open_branch(work, load, opts) is not held  # "b" took its place
    close_branch(work)
    assert branch_mod._OPEN == {}
    close_branch()


def test_an_in_memory_branch_cannot_resume(calib_batches):
    """prune_model's store keeps no weights or inputs: a block that finds no model in memory fails clearly
    instead of pruning a reloaded model (prune_model's loader returns the half-pruned model itself)."""
    load, opts, batches, *_ = _setup("sparsegpt-lean", calib_batches)
    branch = Branch(load, opts, branch_mod.MemoryStore(), "cpu")
    branch.start(batches)
    with pytest.raises(RuntimeError, match="cannot resume at block 1"):
        branch.run_block(1)


def test_report_round_trips_through_json(tmp_path, calib_batches):
    """A block report read back from its marker is the report that was written (α candidates included)."""
    load, opts, batches, *_ = _setup("rakp-adaptive-output", calib_batches)
    branch = Branch(load, opts, DirStore(tmp_path), "cpu")
    branch.start(batches)
    rep = branch.run_block(0)
    assert rep.alpha_errors and rep.layers
    back = DirStore(tmp_path).report(0)
    assert back == rep and report_of(report_dict(rep)) == rep


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_a_saved_source_loads_as_its_kind(tmp_path, arch):
    """The branch's source read from a saved directory: a causal LM as a causal LM (a classifier head would
    be random), a classifier as a classifier, with the saved weights."""
    model = tiny_llama() if arch == "llama" else tiny_bert()
    model.save_pretrained(tmp_path)
    source = Source.of(tmp_path)
    assert source.kind == ("causal-lm" if arch == "llama" else "classifier")
    loaded = source.load()
    assert type(loaded) is type(model)
    for (k, x), y in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
