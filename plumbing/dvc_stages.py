"""DVC at run time: is a stage up to date (``dvc status``), record it (``dvc commit``), what dvc.yaml lists.

DVC is the cache of record: the pipeline flow skips a stage ``dvc status`` finds up to date and records a
stage that ran with ``dvc commit``, so ``make run``, ``dvc repro`` and the flow share one ``dvc.lock``; the
watch flow asks the same question of every stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def dvc_repo(root: Path):  # noqa: ANN202 - dvc.repo.Repo
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return None
    from dvc.repo import Repo

    return Repo(str(root))


def stage_is_fresh(repo, stage: str) -> bool:  # noqa: ANN001
    """True when DVC has a lock entry for the stage and nothing it depends on changed."""
    with contextlib.chdir(repo.root_dir):  # DVC resolves some output paths against the working directory
        return not repo.status(targets=[stage])


def stage_params(dvc_yaml: Path, stage: str) -> list[str]:
    """The params.yaml keys (dotted) that dvc.yaml's ``stage`` tracks."""
    spec = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]
    keys: list[str] = []
    for entry in spec.get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:  # {other_file.yaml: [keys]}: not params.yaml's keys
            raise ValueError(f"dvc.yaml stage {stage!r} tracks params outside params.yaml: {entry!r}")
    return keys


def _dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def same_stage_params(root_params: Mapping[str, Any], other: Mapping[str, Any], keys: list[str]) -> bool:
    """True when every tracked key has the same validated value in both params trees."""
    return all(_dotted(root_params, k) == _dotted(other, k) for k in keys)


def record_stage(repo, stage: str) -> None:  # noqa: ANN001
    """``dvc commit`` the stage: its deps, params and outputs as they are now go into dvc.lock."""
    with contextlib.chdir(repo.root_dir):
        repo.commit(target=stage, force=True)


def stale_stages(root: Path) -> dict[str, list]:
    """``dvc status`` of every stage of the repository at ``root``: stage -> what changed (empty: clean)."""
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        raise FileNotFoundError(f"{root} is not a DVC repository (no .dvc directory): nothing to watch")
    with Repo(str(root)) as repo, contextlib.chdir(repo.root_dir):  # stage names relative to the root
        return repo.status()


def stage_inputs(dvc_yaml: Path, stage: str) -> list[str] | None:
    """The data/ and models/ dependencies dvc.yaml lists for ``stage`` (None: no dvc.yaml or no such stage)."""
    if not dvc_yaml.is_file():
        return None
    spec = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(stage)
    if not isinstance(spec, dict):
        return None
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    return [d for d in deps if d.split("/", 1)[0] in ("data", "models")]
