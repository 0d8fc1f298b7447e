"""The resumable block driver (robustprune.pruning.branch): in memory, on disk, stopped and resumed.

Every run here is compared with :func:`prune_model` (the same driver on a MemoryStore): the masks and every
weight must be equal, bit for bit, however the branch was cut into tasks, processes and restarts.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from robustprune.modeling import find_blocks, linear_groups
from robustprune.pruning import Pattern
from robustprune.pruning import branch as branch_mod
from robustprune.pruning.block import block_weights
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
from robustprune.pruning.streams import BlockInputs, capture_block_inputs
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


# ------------------------------------------------- what the driver hands on: devices, files, the held branch
class SpyLoader(Loader):
    """A :class:`Loader` whose models record every ``.to(...)`` target (the device each is moved to)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.to_args: list = []

    def __call__(self) -> torch.nn.Module:
        m = super().__call__()
        real = m.to

        def to(*args, **kwargs):
            self.to_args.append(args[0] if args else kwargs.get("device"))
            return real(*args, **kwargs)

        m.to = to
        return m


_ABSENT = object()


def _spy(monkeypatch, module, name: str, seen: list, arg: int) -> None:
    """Replace ``module.name`` by a wrapper that records its ``device`` (positional ``arg`` or keyword;
    ``_ABSENT`` when the caller left it to the default) and calls the real function."""
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device", args[arg] if len(args) > arg else _ABSENT))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


def test_the_branch_device_reaches_the_model_and_every_input_it_reads(tmp_path, calib_batches, monkeypatch):
    """The device given to open_branch / Branch (a torch.device, passed on as is) is the one block 0's
    inputs are captured on, every model the branch (re)loads is moved to (a block after a restart, the
    assembly) and the one the saved inputs, extras and extras' tree are loaded on (as its ``str``)."""
    dev = torch.device("cpu")
    model = tiny_bert()
    opts = CASES["sparsegpt-lean"][1]
    load = SpyLoader(model)
    captured, loaded, unflat = [], [], []
    _spy(monkeypatch, branch_mod, "capture_block_inputs", captured, 2)
    _spy(monkeypatch, branch_mod, "load_tensors", loaded, 1)
    _spy(monkeypatch, branch_mod, "unflatten_extras", unflat, 2)
    n = open_branch(tmp_path, load, opts, dev, fresh=True).start(calib_batches)
    close_branch()
    assert len(captured) == 1 and captured[0] is dev
    for i in range(n):  # every block in a new process: the model reloaded, the inputs read from the files
        Branch(load, opts, DirStore(tmp_path), dev).run_block(i)
    assert loaded == ["cpu"] * 2 * n  # each block's inputs and the extras
    assert len(unflat) == n and all(d is dev for d in unflat), unflat
    Branch(load, opts, DirStore(tmp_path), dev).assemble()
    assert load.calls == 1 + n + 1 and len(load.to_args) == 1 + n + 1  # the capture's and every reload's
    assert all(a is dev for a in load.to_args), load.to_args

    # magnitude without data: no capture, but the model still goes to the branch's device
    lean = SpyLoader(model)
    Branch(lean, CASES["magnitude-no-data"][1], branch_mod.MemoryStore(), dev).start(calib_batches)
    assert len(lean.to_args) == 1 and lean.to_args[0] is dev and len(captured) == 1


def test_the_default_device_is_the_cpu(calib_batches, monkeypatch):
    """A Branch built without a device runs on the CPU (a misspelt default would fail at the first move)."""
    captured = []
    _spy(monkeypatch, branch_mod, "capture_block_inputs", captured, 2)
    load, opts, batches, ref, want = _setup("sparsegpt-lean", calib_batches)
    branch = Branch(load, opts, branch_mod.MemoryStore())
    for i in range(branch.start(batches)):
        branch.run_block(i)
    model, got = branch.assemble()
    _assert_same(model, got, ref, want)
    assert captured[-1] == "cpu"


def test_block_weights_honour_the_module_filter(bert):
    """block_weights (what DirStore keeps of a finished block) holds exactly the Linears ``opts.modules``
    selects, by full name, on the CPU: not every Linear of the block."""
    opts = _opts("magnitude", modules="intermediate")
    block = find_blocks(bert)[1]
    want = {n for g in linear_groups(bert, block, "intermediate") for n in g}
    every = {n for g in linear_groups(bert, block) for n in g}
    got = block_weights(bert, 1, opts)
    assert got.keys() == want and want < every
    assert all(t.device.type == "cpu" for t in got.values())
    assert block_weights(bert, 1, _opts("magnitude")).keys() == every


def test_dir_store_is_started_only_with_block_0s_inputs_and_the_extras(tmp_path, calib_batches, monkeypatch):
    """DirStore.started(): block 0's inputs file and extras.json both there, neither alone; a branch stopped
    right after capturing resumes from the saved inputs (no second capture) with prune_model's result."""
    load, opts, batches, ref, want = _setup("rakp-refit", calib_batches)
    store = DirStore(tmp_path)
    assert not store.started()
    first = Branch(load, opts, store, "cpu")
    n = first.start(batches)
    del first
    assert store.started()
    extras = (tmp_path / "extras.json").read_bytes()
    (tmp_path / "extras.json").unlink()
    assert not store.started(), "inputs without the extras are not a start"
    (tmp_path / "extras.json").write_bytes(extras)
    inputs0 = tmp_path / "inputs_000.safetensors"
    inputs0.rename(tmp_path / "kept")
    assert not store.started(), "extras without block 0's inputs are not a start"
    (tmp_path / "kept").rename(inputs0)
    captured = []
    _spy(monkeypatch, branch_mod, "capture_block_inputs", captured, 2)
    resumed = Branch(load, opts, DirStore(tmp_path), "cpu")
    assert resumed.start(batches) == n and captured == []
    for i in range(n):
        resumed.run_block(i)
    model, got = resumed.assemble()
    _assert_same(model, got, ref, want)


def _inputs(batches) -> BlockInputs:
    return capture_block_inputs(tiny_bert(), batches)


def test_saved_inputs_name_their_dense_stream_and_read_back(tmp_path, calib_batches):
    """Each inputs file says in its metadata what its dense stream is — "pruned" (block 0: the same tensors,
    stored once), "yes" (stored beside), "no" (none) — and reads back as such; a file without that metadata
    (an older writer) is read with its dense stream."""
    from safetensors import safe_open

    from robustprune.checkpoints import save_tensors

    store = DirStore(tmp_path)
    start = _inputs(calib_batches)
    store.save_start(start)
    other = [p + 1 for p in start.pruned]
    store._save_inputs(1, BlockInputs(pruned=start.pruned, dense=other, extras=[], token_mask=[]))
    store._save_inputs(2, BlockInputs(pruned=start.pruned, dense=[], extras=[], token_mask=[]))
    tensors = {f"pruned.{i}": p for i, p in enumerate(start.pruned)}
    tensors.update({f"dense.{i}": d for i, d in enumerate(other)})
    save_tensors(tmp_path / "inputs_003.safetensors", tensors)  # no metadata
    kinds = []
    for i in range(4):
        with safe_open(str(tmp_path / f"inputs_{i:03d}.safetensors"), framework="pt") as f:
            kinds.append((f.metadata() or {}).get("dense"))
    assert kinds == ["pruned", "yes", "no", None]
    back = [store.inputs(i, "cpu") for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(back[0].pruned, start.pruned, strict=True))
    assert all(d is p for d, p in zip(back[0].dense, back[0].pruned, strict=True)) and back[0].dense
    for i in (1, 3):
        assert all(torch.equal(a, b) for a, b in zip(back[i].dense, other, strict=True)) and back[i].dense
    assert back[2].dense == []
    assert all(torch.equal(a, b) for a, b in zip(back[0].token_mask, start.token_mask, strict=True))


def test_close_branch_closes_only_that_one(tmp_path, calib_batches):
    """close_branch(path) lets go of the branch held for ``path`` only: closing a path not held is a no-op
    (no error) and keeps the held branch."""
    load, opts, *_ = _setup("sparsegpt-lean", calib_batches)
    held = open_branch(tmp_path / "a", load, opts, fresh=True)
    close_branch(tmp_path / "b")
    assert open_branch(tmp_path / "a", load, opts) is held
    close_branch(tmp_path / "a")
    assert branch_mod._OPEN == {}


@pytest.mark.parametrize(
    ("method", "refit", "called"),
    [("rakp", True, True), ("rakp", False, False), ("sparsegpt", True, False), ("magnitude", True, False)],
)
def test_the_head_refit_runs_only_for_rakp_with_refit_head(calib_batches, monkeypatch, method, refit, called):
    """assemble() refits the head (and reads the last block's outputs for it) only for RAKP with
    rakp.refit_head: the flag is ignored by other methods, even magnitude without data, which has no
    outputs to read."""
    calls = []
    real = branch_mod.finish_head
    monkeypatch.setattr(branch_mod, "finish_head", lambda *a: calls.append(a) or real(*a))
    track = {"track_dense": False} if method == "magnitude" else {}
    out = prune_model(tiny_bert(), calib_batches, _opts(method, alpha=1.0, refit_head=refit, **track))
    assert bool(calls) == called and (out.head is not None) == called
