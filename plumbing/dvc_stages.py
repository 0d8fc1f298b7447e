"""DVC: dvc.yaml generated from the stage manifests; at run time, is a stage up to date (``dvc status``),
record it (``dvc commit``), what dvc.yaml lists.

``python -m plumbing.dvc_stages --write`` writes ``dvc.yaml`` and ``lm/dvc.yaml`` from
:func:`robustprune.stages.manifests`: each stage's ``deps`` are the code its flow imports (transitively, the
modules that compute nothing excepted: :data:`robustprune.stages.NOT_COMPUTING`) and its inputs, its
``params`` and outputs those of its manifest. ``--check`` exits 1 when a file is not the generated one
(tests/unit/test_dvc_deps.py runs the same check).

DVC is the cache of record: the pipeline flow skips a stage ``dvc status`` finds up to date and records a
stage that ran with ``dvc commit``, so ``make run``, ``dvc repro`` and the flow share one ``dvc.lock``; the
watch flow asks the same question of every stage.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from plumbing.imports import import_closure, module_file
from robustprune.layout import Layout
from robustprune.stages import DYNAMIC_IMPORTS, NOT_COMPUTING, Stage, manifests

ROOT = Path(__file__).resolve().parents[1]

#: the comment on top of each generated file
HEADERS = {
    "dvc.yaml": (
        "One stage per stage flow. `dvc repro` reproduces everything; `make run` (flows.pipeline) runs the same",
        "stages as Prefect subflows and records them in the same dvc.lock. Outs are `persist: true` because every",
        "flow writes atomically (temp + rename) and resumes from its own checkpoints: DVC must not delete them first.",
    ),
    "lm/dvc.yaml": (
        "The causal-LM track (profile `lm`): `dvc repro lm/dvc.yaml`, or `make run-lm`. Kept out of the root",
        "dvc.yaml so that `dvc repro` (the encoder pipeline, ~25 min on 2 cores) does not also start the",
        "SmolLM2 track (about an hour on 2 cores, minutes on a GPU).",
    ),
}
GENERATED = (
    "GENERATED from src/robustprune/stages.py by `python -m plumbing.dvc_stages --write`: edit the manifest, not",
    "this file (tests/unit/test_dvc_deps.py fails when they differ).",
)


def code_deps(stage: Stage, root: Path = ROOT) -> list[str]:
    """The source files ``stage`` runs, relative to ``root``: its flow's project imports, transitively, less
    :data:`NOT_COMPUTING`; a sub-package of the library whose every module is imported is listed as its
    directory. Sorted: flows, tasks, then the library."""
    files = {
        module_file(root, m).relative_to(root).as_posix()
        for m in import_closure(root, stage.module, NOT_COMPUTING, DYNAMIC_IMPORTS)
    }
    out = set(files)
    for pkg in sorted((root / "src" / "robustprune").iterdir()):
        if not (pkg / "__init__.py").is_file():
            continue
        members = {f.relative_to(root).as_posix() for f in pkg.rglob("*.py") if "__pycache__" not in f.parts}
        if members <= files:
            out = (out - members) | {pkg.relative_to(root).as_posix()}
    rank = {"flows": 0, "tasks": 1}
    return sorted(out, key=lambda f: (rank.get(f.split("/")[0], 2), f))


def _rel(path: Path, layout: Layout) -> str:
    return path.relative_to(layout.root).as_posix()


def stage_spec(stage: Stage, root: Path = ROOT) -> dict[str, Any]:
    """dvc.yaml's entry for ``stage`` (paths relative to ``root``, where the stage's command runs)."""
    layout = Layout(root)
    spec: dict[str, Any] = {"wdir": stage.wdir} if stage.wdir else {}
    spec["cmd"] = stage.cmd
    deps = code_deps(stage, root) + [_rel(p, layout) for p in stage.inputs]
    spec["deps"] = list(dict.fromkeys(deps))
    if stage.params:
        default = stage.params_file == "params.yaml"
        spec["params"] = list(stage.params) if default else [{stage.params_file: list(stage.params)}]
    flags = lambda p: {"cache": False} if _rel(p, layout).startswith("reports/") else {"persist": True}  # noqa: E731
    for key, paths in (("outs", stage.outs), ("metrics", stage.metrics)):
        if paths:
            spec[key] = [{_rel(p, layout): flags(p)} for p in paths]
    if stage.plots:
        spec["plots"] = [{_rel(p, layout): {"cache": False, **props}} for p, props in stage.plots.items()]
    return spec


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as dvc.yaml was written by hand."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:  # noqa: ARG002
        super().increase_indent(flow, False)


def render(dvc_file: str, root: Path = ROOT) -> str:
    """The text of ``dvc_file`` (``dvc.yaml`` or ``lm/dvc.yaml``) generated from the manifests."""
    stages = [s for s in manifests(Layout(root)).values() if s.dvc_file == dvc_file]
    lines = [f"# {line}" for line in (*HEADERS.get(dvc_file, ()), *GENERATED)] + ["stages:"]
    for i, stage in enumerate(stages):
        body = yaml.dump(
            {stage.name: stage_spec(stage, root)},
            Dumper=_Dumper,
            sort_keys=False,
            width=1000,
            default_flow_style=False,
        )
        body_lines = body.splitlines()
        notes = [
            f"    # {line}"
            for p, why in stage.unlisted.items()
            for line in textwrap.wrap(f"not a dep: {_rel(p, Layout(root))}, {why}", 104)
        ]
        lines += ([""] if i else []) + [f"  {body_lines[0]}", *notes] + [f"  {b}" for b in body_lines[1:]]
    return "\n".join(lines) + "\n"


def dvc_files(root: Path = ROOT) -> list[str]:
    return list(dict.fromkeys(s.dvc_file for s in manifests(Layout(root)).values()))


def drift(root: Path = ROOT) -> list[str]:
    """The dvc.yaml files under ``root`` that are not the generated ones."""
    return [
        f for f in dvc_files(root) if not (root / f).is_file() or (root / f).read_text() != render(f, root)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plumbing.dvc_stages", description=__doc__.split("\n\n")[1])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write dvc.yaml and lm/dvc.yaml")
    mode.add_argument("--check", action="store_true", help="exit 1 when a file is not the generated one")
    args = ap.parse_args(argv)
    if args.write:
        from robustprune.checkpoints import write_text

        for f in dvc_files():
            write_text(ROOT / f, render(f))
            print(f"wrote {f}")
        return 0
    stale = drift()
    for f in stale:
        print(f"{f} is not generated from the stage manifests: run python -m plumbing.dvc_stages --write")
    return 1 if stale else 0


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


if __name__ == "__main__":
    sys.exit(main())
