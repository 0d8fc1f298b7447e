"""Every malformed input is stopped before anything runs: exit 2, one line naming the key, nothing written.

The table is tests/reliability/corpus.py. Each case runs through ``plumbing.cli.validate_or_exit``, the
function behind every ``python -m flows.<stage>``; a handful also run as the real command. The time a
whole command takes (interpreter start included) is measured by ``benchmarks/chaos.py --corpus``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.reliability.corpus import CASES, Case, materialise, root_of, write_base
from tests.unit.test_cli import split_importtime

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus-base")
    write_base(d)
    return d


def snapshot(*dirs: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``dirs`` with its size and modification time."""
    return {
        str(p): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for d in dirs
        if d.exists()
        for p in [d, *d.rglob("*")]
    }


def test_the_corpus_is_large_and_names_are_unique():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.fixture
def prefect_for(request, monkeypatch):
    """Point Prefect's settings where a case needs them: no API, a dead API, or the session's live API."""
    from contextlib import ExitStack

    from prefect.settings import PREFECT_API_URL, temporary_settings

    stack = ExitStack()

    def setup(case: Case) -> None:
        if case.needs == "no-api":
            stack.enter_context(temporary_settings(restore_defaults={PREFECT_API_URL}))
        elif case.needs == "dead-api":
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}))
        elif case.needs == "api":
            url = request.getfixturevalue("prefect_api_url")
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
            _pools(url)

    yield setup
    stack.close()


def _pools(url: str) -> None:
    """idle-pool: no worker; busy-pool: an online worker but none of the pipeline's deployments."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        for name in ("idle-pool", "busy-pool"):
            with contextlib.suppress(Exception):  # exists already (an earlier test in the session)
                client.create_work_pool(WorkPoolCreate(name=name, type="process"), overwrite=True)
        client.send_worker_heartbeat("busy-pool", "reliability-worker", heartbeat_interval_seconds=600)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_stops_before_anything_runs(
    case: Case, base: Path, tmp_path: Path, capsys, monkeypatch, prefect_for
):
    from plumbing.cli import validate_or_exit
    from robustprune.preflight import cuda_visible

    if case.needs == "no-cuda" and cuda_visible():
        pytest.skip("a CUDA device is visible here")
    for key, value in case.env.items():
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    prefect_for(case)
    case_dir = tmp_path / "case"
    params = materialise(case, base, case_dir)
    root = root_of(case, case_dir)
    before = snapshot(tmp_path, base)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        validate_or_exit(str(params), str(root), case.stage)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: invalid configuration, nothing was run or written"), err
    problems = lines[1:]
    assert problems and all(line.strip() for line in problems), err
    assert any(all(part in line for part in case.expected) for line in problems), (case.expected, err)
    assert snapshot(tmp_path, base) == before  # nothing written, nothing touched
    print(
        f"{case.name}: refused in {seconds:.2f} s"
    )  # timed in benchmarks/results/bad_inputs.json, not asserted


REAL_COMMANDS = ["params-random-bytes", "params-empty", "data-label-3000-floats", "device-cuda-without-cuda"]


@pytest.mark.parametrize("name", REAL_COMMANDS)
def test_real_command_exits_2_and_writes_nothing(name: str, base: Path, tmp_path: Path):
    """``python -m flows.pipeline`` itself: validated before Prefect, MLflow or torch are even imported."""
    from robustprune.preflight import cuda_visible

    case = next(c for c in CASES if c.name == name)
    if case.needs == "no-cuda" and cuda_visible():
        pytest.skip("a CUDA device is visible here")
    case_dir = tmp_path / "case"
    params = materialise(case, base, case_dir)
    out = case_dir / "models" / "pruned" / "keep.txt"  # finished work of an earlier run
    out.parent.mkdir(parents=True)
    out.write_text("finished work")
    before = snapshot(tmp_path, base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    res = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "flows.pipeline",
            "--params",
            str(params),
            "--root",
            str(case_dir),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors, imported = split_importtime(res.stderr)
    assert res.returncode == 2, res.stderr[-3000:]
    assert any(all(part in line for part in case.expected) for line in errors), errors
    assert snapshot(tmp_path, base) == before
    assert not {"torch", "prefect", "mlflow"} & imported  # stopped before the heavy imports
