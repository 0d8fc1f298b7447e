"""kill -9 at random points of the prune, sds, cap and attack stages, then the same command: the resumed
run ends with the uninterrupted run's outputs (byte for byte; JSON with its timings dropped) and does not
redo what had finished.

Each test kills its stage twice, at seeded uniform times within the stage's own duration (measured on the
uninterrupted run), then lets it finish. ``benchmarks/chaos.py`` does the same at 20 points and counts.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    OUTPUTS,
    Project,
    StageProcess,
    copy_for,
    leftovers,
    output_differences,
    run_stage,
    stage_env,
)

pytestmark = pytest.mark.reliability

# directories whose every file is final once its marker exists: a resumed run must not rewrite them
UNITS = {
    "prune": ["models/pruned/*/metrics.json"],
    "sds": ["models/sds/*/metrics.json", ".cache/sds-work/*/*/metrics.json"],
    "cap": ["models/cap/*/metrics.json"],
    "attack": [],  # its finished shards are persisted task results under PREFECT_HOME (checked below)
}


def finished_units(root: Path, stage: str, home: Path) -> dict[str, int]:
    """mtime of every file of every finished unit (and of every persisted task result)."""
    out = {}
    for pattern in UNITS[stage]:
        for marker in root.glob(pattern):
            for f in marker.parent.rglob("*"):
                if f.is_file():
                    out[str(f)] = f.stat().st_mtime_ns
    for f in (home / "storage").glob("*") if (home / "storage").is_dir() else []:
        out[str(f)] = f.stat().st_mtime_ns
    return out


def kill_at(stage: str, work: Path, env: dict, delay: float) -> tuple[bool, StageProcess]:
    """Start the stage, kill -9 it ``delay`` seconds after its flow run began; True if it was still running."""
    p = StageProcess(stage, work / "params.yaml", work, env)
    p.started.wait(timeout=600)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and p.proc.poll() is None:
        time.sleep(0.01)
    alive = p.proc.poll() is None
    if alive:
        os.kill(p.proc.pid, signal.SIGKILL)
    p.wait(timeout=60)
    return alive, p


def kill_and_resume(project: Project, stage: str, tmp: Path, api_url: str, seed: int, kills: int = 2) -> dict:
    """Kill -9 ``kills`` times at seeded random points, then finish; returns what happened."""
    rng = random.Random(seed)
    work = copy_for(project, stage, tmp / "project")
    home = tmp / "prefect-home"
    env = stage_env(api_url, home)
    report = {"killed": 0, "kept": True}
    for _ in range(kills):
        killed, _ = kill_at(stage, work, env, rng.uniform(0, project.seconds[stage]))
        report["killed"] += killed
        if not killed:  # it finished before the kill point
            break
    before = finished_units(work, stage, home)
    resumed = run_stage(stage, work / "params.yaml", work, env)
    after = finished_units(work, stage, home)
    report["kept"] = {k: after.get(k) for k in before} == before
    report["differences"] = output_differences(project.root, work, OUTPUTS[stage])
    report["leftovers"] = leftovers(work)
    report["output"] = resumed.output
    return report


def test_kill_9_at_random_points_then_resume(finished, prefect_api_url, tmp_path):
    """The four stages side by side, two at a time (each subprocess is one thread: both cores busy)."""
    from concurrent.futures import ThreadPoolExecutor

    stages = [s for s in ("prune", "sds", "cap", "attack") if s in finished.seconds]
    assert {"prune", "sds", "attack"} <= set(stages)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            s: pool.submit(kill_and_resume, finished, s, tmp_path / s, prefect_api_url, sum(map(ord, s)))
            for s in stages
        }
        reports = {s: f.result() for s, f in futures.items()}
    for stage, report in reports.items():
        assert report["differences"] == [], (stage, report["output"][-3000:])
        assert report["leftovers"] == [], stage
        assert report["kept"], f"{stage}: a resumed run rewrote output that had finished"
        assert report["killed"] >= 1, stage  # at least one kill landed while the stage ran
