from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustprune.checkpoints import atomic_dir, load_masks, save_masks, write_json


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path):
    dest = write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "dir") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert dest.read_text().strip().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_atomic_dir_replaces_whole_directory(tmp_path: Path):
    d = tmp_path / "model"
    with atomic_dir(d) as tmp:
        (tmp / "old.txt").write_text("1")
    with atomic_dir(d) as tmp:
        (tmp / "new.txt").write_text("2")
    assert [p.name for p in d.iterdir()] == ["new.txt"]


def test_masks_survive_pack_and_unpack(tmp_path: Path):
    g = torch.Generator().manual_seed(0)
    masks = {"0.q": torch.rand(7, 13, generator=g) > 0.5, "1.o": torch.rand(64, 256, generator=g) > 0.3}
    save_masks(tmp_path / "masks.safetensors", masks)
    back = load_masks(tmp_path / "masks.safetensors")
    assert back.keys() == masks.keys()
    for k in masks:
        assert torch.equal(back[k], masks[k])
    assert (tmp_path / "masks.safetensors").stat().st_size < (7 * 13 + 64 * 256) / 4  # 8 mask bits per byte
    lazy = load_masks(tmp_path / "masks.safetensors", packed=True)
    assert len(lazy) == 2 and set(lazy) == set(masks) and "0.q" in lazy and "2.x" not in lazy
    for k in masks:
        assert lazy[k].dtype == torch.bool and torch.equal(lazy[k], masks[k])
    with pytest.raises(KeyError):
        lazy["2.x"]


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_safetensors_metadata_is_sorted_so_equal_content_is_equal_bytes(tmp_path: Path):
    """The safetensors writer serialises metadata from a hash map (a new order each call): sorted here."""
    import json
    import struct

    masks = {
        f"{i}.attention.self.query": torch.rand(4, 8, generator=torch.Generator().manual_seed(i)) > 0.5
        for i in range(12)
    }
    paths = [save_masks(tmp_path / f"m{i}.safetensors", masks) for i in range(4)]
    blobs = {p.read_bytes() for p in paths}
    assert len(blobs) == 1
    raw = paths[0].read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    assert list(meta) == sorted(meta) and len(meta) == 12
    back = load_masks(paths[0])
    assert all(torch.equal(back[k], masks[k]) for k in masks)


def test_sort_metadata_pads_a_shorter_header(tmp_path: Path):
    """A header whose sorted compact form is shorter (here: escaped characters) is padded in place."""
    import json
    import struct

    from robustprune.checkpoints import load_tensors, sort_safetensors_metadata

    header = '{"__metadata__":{"b":"\\u0041","a":"x"},"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}'
    header += " " * (-len(header) % 8)
    p = tmp_path / "t.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\x01\x02")
    sort_safetensors_metadata(p)
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n == len(header) and json.loads(raw[8 : 8 + n])["__metadata__"] == {"a": "x", "b": "A"}
    assert list(json.loads(raw[8 : 8 + n])["__metadata__"]) == ["a", "b"]
    assert load_tensors(p)["t"].tolist() == [1, 2]


def test_next_write_sweeps_temporaries_of_dead_writers(tmp_path: Path):
    """kill -9 leaves temporaries: the next write of the same destination removes those of dead processes."""
    dead, live = _dead_pid(), os.getppid()
    stale_file = tmp_path / f".m.json.{dead}.abc123.tmp"
    stale_dir = tmp_path / f".model.{dead}.x_y9.tmp"
    busy = tmp_path / f".m.json.{live}.zzz.tmp"  # a concurrent writer that is alive: kept
    other = tmp_path / f".m.json.5.{dead}.q.tmp"  # not this destination's pattern: kept
    for p in (stale_file, busy, other):
        p.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "w.bin").write_bytes(b"x")
    write_json(tmp_path / "m.json", {"a": 1})
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "w.bin").write_bytes(b"y")
    assert not stale_file.exists() and not stale_dir.exists()
    assert busy.exists() and other.exists()
    assert (tmp_path / "model" / "w.bin").read_bytes() == b"y"


def test_directory_renamed_aside_by_a_dead_writer_is_put_back(tmp_path: Path):
    """Killed between the two renames of a swap: the previous directory returns on the next write."""
    from robustprune.checkpoints import sweep_stale

    dest = tmp_path / "model"
    aside = tmp_path / f".model.old-{_dead_pid()}"
    aside.mkdir()
    (aside / "w.bin").write_bytes(b"previous")
    assert sweep_stale(dest) == [aside]
    assert (dest / "w.bin").read_bytes() == b"previous" and not aside.exists()


def test_interrupted_swap_keeps_the_previous_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stop signal raised between 'rename old aside' and 'rename new in' puts the old one back."""
    import robustprune.checkpoints as ck
    from robustprune.interrupt import StopRequested

    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "w.bin").write_bytes(b"old")
    real, calls = os.replace, []

    def replace(src, dst):  # noqa: ANN001, ANN202
        calls.append((src, dst))
        if len(calls) == 2:  # the second rename of the swap
            raise StopRequested(15)
        return real(src, dst)

    monkeypatch.setattr(ck.os, "replace", replace)
    with pytest.raises(StopRequested), atomic_dir(dest) as tmp:
        (tmp / "w.bin").write_bytes(b"new")
    monkeypatch.setattr(ck.os, "replace", real)
    assert (dest / "w.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_keep_only_dirs_removes_unasked_subdirectories_only(tmp_path):
    from robustprune.checkpoints import keep_only_dirs

    for name in ("kept", "stale", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "index.json").write_text("[]")
    assert keep_only_dirs(tmp_path, iter(["kept", "absent"])) == ["stale"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "index.json", "kept"]
    assert keep_only_dirs(tmp_path / "missing", []) == []  # no out directory yet: nothing to do


def test_keep_only_sweeps_unasked_files_and_the_directories_it_empties(tmp_path):
    from robustprune.checkpoints import keep_only

    for rel in (
        "m1/textfooler.csv",
        "m1/textbugger.csv",
        "m2/textfooler.csv",
        "m1/notes.txt",
        ".hidden/x.csv",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert keep_only(tmp_path, ["m1/textfooler.csv"], "*/*.csv") == ["m1/textbugger.csv", "m2/textfooler.csv"]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [".hidden/x.csv", "m1/notes.txt", "m1/textfooler.csv"]  # other files and hidden ones stay
    assert not (tmp_path / "m2").exists()  # emptied by the sweep
    assert keep_only(tmp_path / "missing", [], "*/*.csv") == []
