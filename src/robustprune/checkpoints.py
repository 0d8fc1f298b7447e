"""Atomic writes: a reader never sees a half-written checkpoint, report or metrics file.

Everything is written beside its destination under a temporary name and moved into place with
``os.replace`` (atomic on POSIX within one file system). Directories are swapped the same way: the new
one is built completely, the old one renamed aside, the new one renamed in, the old one deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``dest``; on success it replaces ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``dest``; on success it replaces ``dest`` whole."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(dest: str | Path, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def write_json(dest: str | Path, obj: Any) -> Path:
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_tensors(
    dest: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """safetensors file, atomically; tensors are made contiguous (and detached) first."""
    clean = {k: v.detach().contiguous() for k, v in tensors.items()}
    with atomic_path(dest) as tmp:
        save_file(clean, str(tmp), metadata=metadata)
    return Path(dest)


def load_tensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=device)


def save_pretrained_atomic(
    model: torch.nn.Module, tokenizer: Any, dest: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """A Hugging Face directory (safetensors) that ``from_pretrained`` loads, swapped in atomically.

    ``extra`` maps file names to JSON-able objects written beside the weights (e.g. metrics.json).
    """
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, obj in (extra or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    return Path(dest)


def pack_masks(masks: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Bit-pack boolean masks (8 per byte): the compact mask record saved beside a pruned model."""
    import numpy as np

    packed, meta = {}, {}
    for name, m in masks.items():
        packed[name] = torch.from_numpy(np.packbits(m.bool().cpu().numpy().ravel()))
        meta[name] = json.dumps(list(m.shape))
    return packed, meta


def unpack_masks(packed: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> dict[str, torch.Tensor]:
    import numpy as np

    out = {}
    for name, bits in packed.items():
        shape = json.loads(meta[name])
        n = int(np.prod(shape))
        out[name] = torch.from_numpy(np.unpackbits(bits.numpy())[:n].astype(bool)).reshape(shape)
    return out


def save_masks(dest: str | Path, masks: Mapping[str, torch.Tensor]) -> Path:
    packed, meta = pack_masks(masks)
    return save_tensors(dest, packed, metadata=meta)


class PackedMasks(Mapping[str, torch.Tensor]):
    """Masks kept bit-packed in memory (1 bit a weight) and unpacked one at a time on access.

    A pruned SmolLM2-135M's masks take 106 MB as bool tensors and 13 MB packed: the SDS stages read one
    mask per Linear, so they hold this instead of :func:`unpack_masks`'s dict.
    """

    def __init__(self, packed: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
        self._packed, self._meta = dict(packed), dict(meta)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._packed:
            raise KeyError(name)
        return unpack_masks({name: self._packed[name]}, self._meta)[name]

    def __contains__(self, name: object) -> bool:
        return name in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def load_masks(path: str | Path, *, packed: bool = False) -> dict[str, torch.Tensor] | PackedMasks:
    """The mask record at ``path``: a dict of bool tensors, or with ``packed`` a :class:`PackedMasks`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        bits = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return PackedMasks(bits, meta) if packed else unpack_masks(bits, meta)
