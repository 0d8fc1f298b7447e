"""Cache keys: one helper (tasks.common.code_digest) hashes the source every cached result depends on."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tasks.common import code_digest

ROOT = Path(__file__).resolve().parents[2]


def _package(tmp_path: Path, name: str, files: dict[str, str]) -> None:
    pkg = tmp_path / name
    pkg.mkdir(exist_ok=True)
    for rel, text in files.items():
        (pkg / rel).write_text(text)


def test_code_digest_follows_every_file_of_a_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "cachepkg", {"__init__.py": "", "a.py": "X = 1\n"})
    first = code_digest("cachepkg")
    assert code_digest("cachepkg") == first  # deterministic
    (tmp_path / "cachepkg" / "a.py").write_text("X = 2\n")
    second = code_digest("cachepkg")
    assert second != first  # an edited file changes the key
    (tmp_path / "cachepkg" / "b.py").write_text("")
    assert code_digest("cachepkg") not in (first, second)  # so does a new file
    assert code_digest("cachepkg", "cachepkg.a") != code_digest("cachepkg")  # and another module named
    sys.modules.pop("cachepkg", None)
    sys.modules.pop("cachepkg.a", None)


def _source_hashes_outside_code_digest(path: Path) -> list[int]:
    """Lines of ``path`` that hash source files themselves: sha256_files(...) over something with __file__."""
    tree = ast.parse(path.read_text())
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "sha256_files"):
            continue
        inner = list(ast.walk(node))
        if any(getattr(n, "id", None) == "__file__" or getattr(n, "attr", None) == "__file__" for n in inner):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("name", ["attack", "cap", "evaluate", "finetune", "lm", "prune", "sds"])
def test_every_cached_stage_keys_its_code_with_the_one_helper(name: str) -> None:
    path = ROOT / "tasks" / f"{name}.py"
    assert _source_hashes_outside_code_digest(path) == [], f"{path.name} hashes source files itself"
    assert "code_digest(" in path.read_text(), f"{path.name} keys no cache on its code"


def test_publish_models_leaves_exactly_the_asked_models_and_logs_the_report(tmp_path, monkeypatch):
    import mlflow

    from robustprune.checkpoints import read_json
    from tasks.common import Layout, publish_models

    logged = []
    monkeypatch.setattr(
        mlflow, "log_artifact", lambda path, artifact_path=None: logged.append((path, artifact_path))
    )
    layout = Layout(tmp_path)
    for name in ("old", "keep"):
        (tmp_path / "models" / "sds" / name).mkdir(parents=True)
    publish_models(layout, "sds", {"keep": {}, "new": {}}, {"keep": 1})
    assert sorted(p.name for p in (tmp_path / "models" / "sds").iterdir()) == ["index.json", "keep"]
    assert read_json(tmp_path / "models" / "sds" / "index.json") == ["keep", "new"]
    assert read_json(layout.reports / "sds.json") == {"keep": 1}
    assert logged == [(str(layout.reports / "sds.json"), "sds")]
    publish_models(layout, "cap", [], {})  # no model asked for: the out directory still exists
    assert read_json(tmp_path / "models" / "cap" / "index.json") == []
