"""Atomic writes: a reader never sees a half-written checkpoint, report or metrics file.

Everything is written beside its destination under a temporary name and moved into place with
``os.replace`` (atomic on POSIX within one file system). Directories are swapped the same way: the new
one is built completely, the old one renamed aside, the new one renamed in, the old one deleted.

Interruptions: an exception (a stop signal included) while writing removes the temporary and leaves the
previous version in place; one between the two renames of a directory swap puts the previous directory
back. A writer killed with ``kill -9`` cannot clean up: its temporaries carry its process id, and the
next write of the same destination removes those whose process is gone (and puts back a previous
directory the dead writer had renamed aside, when nothing replaced it).

Byte-reproducible: safetensors files are written with their metadata sorted by key (the safetensors
writer serialises a hash map, in a different order in every process), JSON with sorted keys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def sweep_stale(dest: str | Path) -> list[Path]:
    """Remove the temporaries of ``dest`` left by writers that no longer run (a ``kill -9``).

    Temporaries are named ``.<name>.<pid>.<random>.tmp``; a previous directory renamed aside during a
    swap ``.<name>.old-<pid>``, and it is put back when ``dest`` is missing. Those of live processes (a
    concurrent writer) are kept. Returns what was removed or restored.
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    name = re.escape(dest.name)
    tmp_re, old_re = re.compile(rf"^\.{name}\.(\d+)\.[^.]+\.tmp$"), re.compile(rf"^\.{name}\.old-(\d+)$")
    touched = []
    for p in sorted(dest.parent.iterdir()):
        match = tmp_re.match(p.name) or old_re.match(p.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if match.re is old_re and not dest.exists():
            os.replace(p, dest)
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        touched.append(p)
    return touched


def keep_only_dirs(parent: str | Path, names: Iterable[str]) -> list[str]:
    """Delete the sub-directories of ``parent`` not in ``names`` (hidden ones, ``.name``, are kept), so a stage's
    out directory holds exactly what params.yaml asks for; returns the removed names, sorted."""
    return keep_only(parent, names, "*", dirs=True)


def keep_only(parent: str | Path, names: Iterable[str], pattern: str, *, dirs: bool = False) -> list[str]:
    """The one stale-output sweep: delete what ``parent.glob(pattern)`` finds (directories with ``dirs``, else
    files) whose path relative to ``parent`` is not in ``names``; hidden entries are kept, and a directory the
    sweep leaves empty goes too. Returns the removed relative paths, sorted."""
    parent, keep = Path(parent), set(names)
    removed = []
    for child in sorted(parent.glob(pattern)) if parent.is_dir() else []:
        rel = child.relative_to(parent).as_posix()
        if rel in keep or any(part.startswith(".") for part in child.relative_to(parent).parts):
            continue
        if dirs and child.is_dir():
            shutil.rmtree(child)
        elif not dirs and child.is_file():
            child.unlink()
        else:
            continue
        removed.append(rel)
        for d in child.relative_to(parent).parents[:-1]:  # directories the sweep emptied
            if not any((parent / d).iterdir()):
                (parent / d).rmdir()
    return removed


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``dest``; on success it replaces ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent)
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
    sweep_stale(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        _swap_in(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an existing ``dest`` is renamed aside first and deleted after.

    Interrupted between the two renames (a signal raises there), the old directory is put back.
    """
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    moved = False
    try:
        if dest.exists():
            os.replace(dest, old)
            moved = True
        os.replace(tmp, dest)
    except BaseException:
        if moved and old.exists() and not dest.exists():
            os.replace(old, dest)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


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
        sort_safetensors_metadata(tmp)
    return Path(dest)


def sort_safetensors_metadata(path: str | Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` sorted by key, so equal files are equal bytes.

    The header is JSON after an 8-byte little-endian length, padded with spaces to a multiple of 8;
    tensor offsets are relative to its end, so only the header is rewritten (in place when the sorted
    header has the same length, which it has unless the JSON escaping differs).
    """
    path = Path(path)
    with path.open("r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        meta = header.get("__metadata__")
        if not meta or len(meta) < 2:
            return
        header = {
            "__metadata__": dict(sorted(meta.items())),
            **{k: v for k, v in header.items() if k != "__metadata__"},
        }
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(raw) <= n:
            f.seek(8)
            f.write(raw + b" " * (n - len(raw)))
            return
    padded = raw + b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, path.open("rb") as src, tmp.open("wb") as out:
        src.seek(8 + n)
        out.write(struct.pack("<Q", len(padded)) + padded)
        shutil.copyfileobj(src, out, 1 << 20)


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

    A pruned SmolLM2-135M's masks (106M block-Linear weights) take 106 MB as bool tensors (a byte each) and
    13 MB packed (a bit each): the SDS stages read one
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
