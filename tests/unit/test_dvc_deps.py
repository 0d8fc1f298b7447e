"""dvc.yaml lists the code each stage runs: a stage whose imported computing code changed must be stale.

`make run` asks `dvc status` whether a stage must run again; a module a stage imports but dvc.yaml does not
list would leave it "up to date" after a change (issue #27: a FreeLB-only change left `finetune` skipped).
The closure of project imports of `flows/<stage>.py` (every `import`, also inside functions) must be covered
by the stage's `deps`, except the plumbing below, which decides how results are written, logged, resumed or
shipped, never what they are.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.unit.test_layers import imported_names

ROOT = Path(__file__).resolve().parents[2]

#: modules that do not change what a stage computes (why, one line each)
PLUMBING = {
    "flows": "package init: offline environment variables",
    "flows.pipeline": "composes the stage flows; each stage lists its own code",
    "plumbing": "run-time plumbing (every plumbing.* module): argument parsing, service preflight, signals, "
    "the detached Prefect server, task runners, remote deployments, DVC status and sync",
    "robustprune": "package init",
    "robustprune.config": "validation: the values a stage reads are its dvc.yaml params",
    "robustprune.checkpoints": "atomic writes of what the stage computed",
    "robustprune.interrupt": "the stop flag (a stopped stage writes nothing partial)",
    "robustprune.preflight": "input checks before a stage starts",
    "tasks": "package init",
    "tasks.common": "paths, cache keys, MLflow run scaffolding",
    "tasks.tracking": "MLflow logging",
}


def _file(module: str) -> Path | None:
    parts = module.split(".")
    base = (
        ROOT / "src"
        if parts[0] == "robustprune"
        else ROOT
        if parts[0] in ("flows", "tasks", "plumbing")
        else None
    )
    if base is None:
        return None
    p = base.joinpath(*parts)
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(path: Path, module: str) -> set[str]:
    return imported_names(path, module, from_modules=True)


def stage_modules(stage: str) -> set[str]:
    """Project modules `python -m flows.<stage>` imports, transitively, plumbing excluded."""
    seen: set[str] = set()
    stack = [f"flows.{stage}"]
    while stack:
        m = stack.pop()
        path = _file(m)
        if m in seen or m in PLUMBING or m.split(".")[0] == "plumbing" or path is None:
            continue
        seen.add(m)
        stack += [i for i in _imports(path, m) if _file(i) is not None]
    return seen


def _uncovered(stage: str, deps: list[str]) -> list[str]:
    files = {str(_file(m).relative_to(ROOT)) for m in stage_modules(stage)}
    return sorted(f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))


def test_every_stage_lists_the_code_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    drift = {s: _uncovered(s, v.get("deps", [])) for s, v in stages.items()}
    drift = {s: files for s, files in drift.items() if files}
    assert not drift, f"dvc.yaml deps miss modules their stage imports (add them): {drift}"


def test_the_check_sees_the_finetune_drift_of_issue_27():
    """Yesterday's dvc.yaml: finetune without adversarial.py and modeling.py must fail the check."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    old = [
        d
        for d in stages["finetune"]["deps"]
        if d not in ("src/robustprune/adversarial.py", "src/robustprune/modeling.py")
    ]
    missing = _uncovered("finetune", old)
    assert "src/robustprune/adversarial.py" in missing and "src/robustprune/modeling.py" in missing
