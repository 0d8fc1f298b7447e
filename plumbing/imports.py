"""The project's own imports, read from the source (no module is executed): what a stage's code is.

:func:`imported_names` is the one parser of ``import`` statements the layering test (tests/unit/test_layers.py)
and the dvc.yaml generator (:mod:`plumbing.dvc_stages`) share.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from pathlib import Path

#: top-level project packages -> the directory (relative to the root) that holds them
PACKAGES = {"robustprune": "src", "plumbing": ".", "tasks": ".", "flows": "."}


def imported_names(path: Path, module: str, *, from_modules: bool = False) -> set[str]:
    """Every dotted name ``path`` imports (``from a import b`` gives ``a.b``: the module ``a.b`` if there is one,
    else an attribute of ``a``, and ``a`` itself too with ``from_modules``), relative imports resolved. Parent
    packages imported on the way are not counted (``import a.b.c`` runs ``a/__init__.py`` too, whatever the
    statement's form). Every ``import`` counts, also those inside functions."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(str(path), path.stat().st_mtime_ns):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" if a.name != "*" else base for a in node.names}
            if from_modules:
                out.add(base)
    return out


@functools.lru_cache(maxsize=4096)
def _import_nodes(path: str, mtime_ns: int) -> list[ast.Import | ast.ImportFrom]:  # noqa: ARG001 - the cache key
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def module_file(root: Path, module: str) -> Path | None:
    """The file of a project module (a package's ``__init__.py``), or None (not a project module)."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    p = (root / PACKAGES[parts[0]]).joinpath(*parts)
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def skipped(module: str, skip: Mapping[str, str] | frozenset[str]) -> bool:
    """``module`` is named in ``skip``, or lies in a package ``skip`` names as ``package.*``."""
    return module in skip or any(
        k.endswith(".*") and (module == k[:-2] or module.startswith(k[:-1])) for k in skip
    )


def package_modules(root: Path, package: str) -> list[str]:
    """Every module of a project package, the package itself included."""
    top = root / PACKAGES[package.split(".")[0]]
    base = top.joinpath(*package.split("."))
    return [
        ".".join(f.relative_to(top).with_suffix("").parts).removesuffix(".__init__")
        for f in sorted(base.rglob("*.py"))
        if "__pycache__" not in f.parts
    ]


def import_closure(
    root: Path,
    entry: str,
    skip: Mapping[str, str] | frozenset[str] = frozenset(),
    dynamic: Mapping[str, str] | frozenset[str] = frozenset(),
) -> set[str]:
    """Project modules ``python -m <entry>`` imports, transitively, with the packages that hold them (importing
    ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``); a module :func:`skipped` by ``skip`` is neither
    counted nor followed. ``dynamic`` names functions that import modules of their package by name
    (``importlib``): a module that imports one (``from pkg import build``) brings every module of ``pkg``."""
    seen: set[str] = set()
    stack = [entry]
    while stack:
        m = stack.pop()
        path = module_file(root, m)
        if m in seen or path is None or skipped(m, skip):
            continue
        seen.add(m)
        parts = m.split(".")
        stack += [".".join(parts[:n]) for n in range(1, len(parts))]
        names = imported_names(path, m, from_modules=True)
        stack += [i for i in names if module_file(root, i) is not None]
        for name in names & set(dynamic):
            stack += package_modules(root, name.rpartition(".")[0])
    return seen
