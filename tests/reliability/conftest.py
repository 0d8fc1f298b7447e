"""Fixtures of the reliability suite: a finished tiny project, helpers to run and stop stages.

The tiny project is tests/conftest.py's (a random 2-layer BERT, 240 synthetic reviews): the session's shared
pipeline run, with the stages this suite stops or kills (sds, cap, attack) re-run as small as still
exercises them; it is then copied for every test that kills or stops a stage in a real subprocess. The
Prefect API is the session's (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_project, write_tiny_project

# what each stage of the tiny project writes (compared between an uninterrupted and a resumed run)
OUTPUTS = {
    "prune": ["models/pruned"],
    "sds": ["models/sds"],
    "cap": ["models/cap"],
    "attack": ["reports/attacks"],
}
# what a stage's subprocess run must not find, so that it has work to do (its outputs and its work dirs)
FRESH = {
    "prune": ["models/pruned", ".cache/prune-work", "models/sds", ".cache/sds-work"],
    "sds": ["models/sds", ".cache/sds-work"],
    "cap": ["models/cap", ".cache/cap-work"],
    "attack": ["reports/attacks", "reports/attack.json"],
}
STAGES = ["prepare", "attack_resources", "finetune", "soup", "calibrate", "prune", "sds", "cap", "attack"]
TIMING_KEY = re.compile(r"seconds|_time$|^time|wall|elapsed|started|duration|speedup|_ms$|latency")


def shrunk(params: dict) -> dict:
    """The stages this suite stops or kills made as small as still exercises them: sds, cap and attack (prune
    as tests/conftest.py's tiny project has it: magnitude, sparsegpt and rakp at 50% and 2:4)."""
    params["sds"] = {"methods": ["sparsegpt", "rakp"], "sparsities": [0.5], "steps": 5}
    params["cap"] = {
        "sparsities": [0.5, 0.75],
        "train_examples": 64,
        "batch_size": 16,
        "warmup_steps": 2,
        "ramp_steps": 4,
        "hold_steps": 2,
        "lr": 3.0e-3,
        "extra_negatives": 16,
        "ablations": [],
        "structured": {"sparsities": []},
    }
    params["attack"] = {
        "models": ["soup-greedy"],
        "recipes": ["textbugger"],
        "num_examples": 6,
        "shard_size": 2,
        "resources": params["attack"]["resources"],
    }
    return params


def tiny_params(root: Path) -> Path:
    """The tiny project with stages shrunk for the reliability suite (benchmarks/chaos.py's, from scratch)."""
    path = write_tiny_project(root)
    params = yaml.safe_load(path.read_text())
    params["finetune"]["variants"] = params["finetune"]["variants"][:1]
    params["soup"] = {"criterion": "accuracy"}  # no validation attack: that is the attack stage's test
    path.write_text(yaml.safe_dump(shrunk(params), sort_keys=False))
    return path


@dataclass
class Project:
    root: Path
    params: Path
    seconds: dict[str, float] = field(default_factory=dict)


def run_project(root: Path) -> Project:
    """Every stage the suite stops or kills, run once to the end in-process (needs a Prefect API)."""
    import importlib

    import flows  # noqa: F401

    project = Project(root, tiny_params(root))
    for stage in STAGES:
        if stage == "cap" and not (ROOT / "flows" / "cap.py").is_file():
            continue
        flow = getattr(importlib.import_module(f"flows.{stage}"), f"{stage}_flow")
        t0 = time.perf_counter()
        flow(params_path=str(project.params), root=str(root))
        project.seconds[stage] = time.perf_counter() - t0
    return project


#: what the reference run of the suite does not take from the shared tiny run: the shrunk stages' outputs
SHRUNK = ("sds", "cap", "attack")
NOT_SHARED = (
    "models/sds",
    ".cache/sds-work",
    "reports/sds.json",
    "models/cap",
    ".cache/cap-work",
    "reports/cap.json",
    "reports/attacks",
    "reports/attack.json",
    "mlruns.db",
    "mlartifacts",
)


@pytest.fixture(scope="session")
def finished(pipeline_run, tmp_path_factory, prefect_api_url) -> Project:
    """The reference: every stage the suite stops or kills, run once to the end, uninterrupted.

    A copy of the shared tiny run (tests/conftest.py ``pipeline_run``): its upstream outputs and its prune
    stage (the same prune params, so the same models) as they are, then sds, cap and attack run in-process
    with this suite's smaller settings (``shrunk``)."""
    import importlib

    import flows  # noqa: F401
    from robustprune.config import load_params

    src, _, result = pipeline_run
    root = copy_project(src, tmp_path_factory.mktemp("reliable") / "project", skip=NOT_SHARED)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(shrunk(yaml.safe_load(path.read_text())), sort_keys=False))
    # the shared run's models/pruned are this project's prune stage's: the same prune settings
    assert load_params(path).prune == load_params(src / "params.yaml").prune
    project = Project(root, path, {"prune": result["ran"]["prune"]})
    for stage in SHRUNK:
        flow = getattr(importlib.import_module(f"flows.{stage}"), f"{stage}_flow")
        t0 = time.perf_counter()
        flow(params_path=str(path), root=str(root))
        project.seconds[stage] = time.perf_counter() - t0
    return project


def copy_for(project: Project, stage: str, dst: Path) -> Path:
    """A copy of the finished project without ``stage``'s outputs (and what depends on them)."""
    skip = set(FRESH[stage]) | {"mlartifacts"}
    shutil.copytree(
        project.root,
        dst,
        ignore=lambda d, names: [
            n for n in names if (Path(d) / n).relative_to(project.root).as_posix() in skip
        ],
    )
    return dst


def stage_env(api_url: str, prefect_home: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(prefect_home)}


class StageProcess:
    """``python -m flows.<stage>`` in a subprocess, its output collected line by line."""

    def __init__(self, stage: str, params: Path, root: Path, env: dict[str, str]) -> None:
        self.stage, self.lines = stage, []
        self.started = threading.Event()
        cmd = [sys.executable, "-m", f"flows.{stage}", "--params", str(params), "--root", str(root)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))
            if "Beginning flow run" in line:
                self.started.set()
        self.started.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc


def run_stage(
    stage: str, params: Path, root: Path, env: dict[str, str], timeout: float = 600
) -> StageProcess:
    p = StageProcess(stage, params, root, env)
    rc = p.wait(timeout)
    assert rc == 0, f"{stage} exited {rc}:\n{p.output[-4000:]}"
    return p


def _strip_timings(node: object) -> object:
    if isinstance(node, dict):
        return {k: _strip_timings(v) for k, v in node.items() if not TIMING_KEY.search(str(k))}
    if isinstance(node, list):
        return [_strip_timings(v) for v in node]
    return node


def _json_equal(a: bytes, b: bytes, ref_root: Path, new_root: Path) -> bool:
    """Equal once timings are dropped and each run's project root is written as <root>."""
    ja = json.loads(a.decode().replace(str(ref_root), "<root>"))
    jb = json.loads(b.decode().replace(str(new_root), "<root>"))
    return _strip_timings(ja) == _strip_timings(jb)


def output_differences(ref_root: Path, new_root: Path, rel_dirs: list[str]) -> list[str]:
    """Files under ``rel_dirs`` that differ: checkpoints byte for byte, JSON once timings are dropped
    (and paths under the project root compared relative to it)."""
    diffs = []
    for rel in rel_dirs:
        ref, new = ref_root / rel, new_root / rel
        ref_files = (
            {p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file()} if ref.exists() else set()
        )
        new_files = (
            {p.relative_to(new).as_posix() for p in new.rglob("*") if p.is_file()} if new.exists() else set()
        )
        diffs += [f"{rel}/{f}: only in the reference" for f in sorted(ref_files - new_files)]
        diffs += [f"{rel}/{f}: only in the resumed run" for f in sorted(new_files - ref_files)]
        for f in sorted(ref_files & new_files):
            a, b = (ref / f).read_bytes(), (new / f).read_bytes()
            if a == b:
                continue
            if f.endswith(".json") and _json_equal(a, b, ref_root, new_root):
                continue
            diffs.append(f"{rel}/{f}: differs")
    return diffs


def leftovers(root: Path) -> list[str]:
    """Temporaries of atomic writes (``.<name>.<pid>.<x>.tmp``, ``.<name>.old-<pid>``) left anywhere."""
    pat = re.compile(r"^\..+\.(\d+\.[^.]+\.tmp|old-\d+)$")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if pat.match(p.name))


def mtimes(root: Path, rel_dirs: list[str]) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime_ns
        for rel in rel_dirs
        if (root / rel).exists()
        for p in (root / rel).rglob("*")
        if p.is_file()
    }
