from __future__ import annotations

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
