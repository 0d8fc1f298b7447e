"""SIGTERM / SIGINT: a stage stops within seconds, records itself cancelled, leaves no partial output, resumes.

In a real subprocess (``python -m flows.<stage>``) on a copy of the finished tiny project: the signal
arrives mid-stage (after the first pruned block; after the first attacked shard, while the next one runs
in the task runner's worker thread), and the same command afterwards finishes with the outputs of the
uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    OUTPUTS,
    StageProcess,
    copy_for,
    leftovers,
    mtimes,
    output_differences,
    run_stage,
    stage_env,
)

pytestmark = pytest.mark.reliability

# a point mid-stage: the first file matching appears (under the project root, or under PREFECT_HOME)
MIDWAY = {
    "prune": ("root", ".cache/prune-work/*/*/block_000.json"),
    "attack": ("prefect_home", "storage/*"),
}
STOP_WITHIN = 10.0  # seconds from the signal to the process's exit (issue #17)


def _wait_for(p: StageProcess, base: Path, pattern: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not list(base.glob(pattern)):
        assert p.proc.poll() is None, f"{p.stage} ended before the stop point:\n{p.output[-3000:]}"
        assert time.monotonic() < deadline, f"{p.stage}: no {pattern} after {timeout} s"
        time.sleep(0.02)


def _prefect_states(api_url: str, stage: str, root: Path) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[stage])), limit=200)
    return [r.state.type.value for r in runs if r.parameters.get("root") == str(root) and r.state]


def _mlflow_statuses(root: Path, since_ms: int) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlruns.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"attributes.start_time >= {since_ms}", max_results=1000)
    return [r.info.status for r in runs]


@pytest.mark.parametrize(("stage", "sig"), [("prune", signal.SIGTERM), ("attack", signal.SIGINT)])
def test_stop_signal_mid_stage_then_resume(stage, sig, finished, prefect_api_url, tmp_path):
    work = copy_for(finished, stage, tmp_path / "project")
    home = tmp_path / "prefect-home"
    env = stage_env(prefect_api_url, home)
    since_ms = int(time.time() * 1000)
    p = StageProcess(stage, work / "params.yaml", work, env)
    where, pattern = MIDWAY[stage]
    _wait_for(p, work if where == "root" else home, pattern)
    t0 = time.monotonic()
    os.kill(p.proc.pid, sig)
    rc = p.wait(timeout=120)
    stopped_after = time.monotonic() - t0

    assert rc == 128 + sig, p.output[-3000:]
    assert stopped_after <= STOP_WITHIN, f"{stopped_after:.1f} s:\n{p.output[-3000:]}"
    name = signal.Signals(sig).name
    assert f"stopped by {name} in stage {stage!r}" in p.output
    assert "run the same command again to resume" in p.output
    # recorded as cancelled, not crashed or running
    assert _prefect_states(prefect_api_url, stage, work) == ["CANCELLED"], p.output[-3000:]
    statuses = _mlflow_statuses(work, since_ms)
    assert statuses and set(statuses) == {"KILLED"}, statuses
    # no partial file in place of an output: each output unit is complete or absent
    assert leftovers(work) == []
    pruned = work / "models" / "pruned"
    for d in pruned.iterdir() if stage == "prune" and pruned.is_dir() else []:
        assert {"model.safetensors", "masks.safetensors", "metrics.json"} <= {f.name for f in d.iterdir()}, d

    finished_before = mtimes(work, OUTPUTS[stage]) if stage == "prune" else {}
    again = run_stage(stage, work / "params.yaml", work, env)
    assert output_differences(finished.root, work, OUTPUTS[stage]) == []
    assert leftovers(work) == []
    after = mtimes(work, OUTPUTS[stage])
    assert {k: after.get(k) for k in finished_before} == finished_before  # what had finished is kept
    if stage == "prune":
        assert "already pruned" in again.output or "cache hit" in again.output
